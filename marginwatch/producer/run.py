"""The producer's run loop (source → validator → publisher) and the sources built from the CLI.

The loop runs its own asyncio event loop, so call ``run_producer`` from a plain thread (or the
main one); it returns when the source ends, ``stop`` is set or ``duration_seconds`` pass. The
counters of ``ProducerStats`` may be read from another thread while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from marginwatch.base.metrics import ProducerMetrics
from marginwatch.base.ticks import Tick
from marginwatch.producer.binance import ReconnectPolicy, binance_source
from marginwatch.producer.pacing import only_symbols
from marginwatch.producer.publisher import Publisher, PublishOutcome
from marginwatch.producer.replay import ReplayFileError, replay_source
from marginwatch.producer.scenarios import Scenario, ScenarioError, parse_scenario
from marginwatch.producer.synthetic import MAJOR_START_PRICES, MarketSpec, synthetic_source
from marginwatch.producer.ticks import Batch, Malformed, Source
from marginwatch.producer.validation import TickValidationError, TickValidator

DEFAULT_SYNTHETIC_SYMBOLS = 20
POLL_SECONDS = 0.1
PUBLISH_RETRY_SECONDS = 1.0

logger = logging.getLogger(__name__)


@dataclass
class ProducerStats:
    """What the producer did: ticks published, rejects by reason, Redis errors.

    With ``metrics``, every count also moves the producer's Prometheus metrics.
    """

    published: int = 0
    last_sequence: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    last_reject_messages: dict[str, str] = field(default_factory=dict)
    publish_errors: int = 0
    newest_event_time_ms: int = 0
    metrics: ProducerMetrics | None = None

    def summary(self) -> str:
        """One line: ticks published and rejects by reason."""
        rejects = ", ".join(f"{reason} {count}" for reason, count in sorted(self.rejects.items()))
        return f"published {self.published} ticks; rejects: {rejects or 'none'}"

    def count_reject(self, reason: str, message: str) -> None:
        """Count one reject; the first of each reason is logged as a warning."""
        self.rejects[reason] += 1
        self.last_reject_messages[reason] = message
        if self.metrics is not None:
            self.metrics.ticks_rejected.labels(reason).inc()
        level = logging.WARNING if self.rejects[reason] == 1 else logging.DEBUG
        logger.log(level, "rejected (%s): %s", reason, message)

    def count_published(self, outcome: PublishOutcome) -> None:
        """Count a publication: published ticks, and stale ones as rejects."""
        self.published += len(outcome.published)
        if outcome.published:
            self.last_sequence = outcome.published[-1].sequence
            newest = max(tick.event_time_ms for tick in outcome.published)
            self.newest_event_time_ms = max(self.newest_event_time_ms, newest)
            if self.metrics is not None:
                self.metrics.ticks_accepted.inc(len(outcome.published))
                self.metrics.last_tick_timestamp.set(self.newest_event_time_ms / 1000)
        for tick in outcome.stale:
            message = f"event_time: older than the tick stored for {tick.symbol} in Redis"
            self.count_reject("stale", message)

    def count_publish_error(self) -> None:
        """Count a batch dropped because Redis failed."""
        self.publish_errors += 1
        if self.metrics is not None:
            self.metrics.redis_errors.inc()


class SourceArgumentError(ValueError):
    """Command-line arguments that do not make a source; the message names the option."""


def run_producer(
    client: redis.Redis,
    source: Source,
    validator: TickValidator,
    publisher: Publisher,
    stop: threading.Event | None = None,
    *,
    duration_seconds: float | None = None,
    stats: ProducerStats | None = None,
    publish_retry_seconds: float = PUBLISH_RETRY_SECONDS,
    on_round: Callable[[], None] = lambda: None,
) -> ProducerStats:
    """Validate and publish ``source``'s batches until it ends, ``stop`` or ``duration_seconds``.

    Pings ``client`` first, so an unreachable Redis fails at once (``redis.ConnectionError``);
    later Redis errors drop the batch, are counted, and pause ``publish_retry_seconds``.
    ``on_round`` is called each time round the loop (at least every ``POLL_SECONDS``: a
    heartbeat).
    """
    handler = BatchHandler(validator, publisher, stats or ProducerStats(), publish_retry_seconds)
    client.ping()
    deadline = None if duration_seconds is None else time.monotonic() + duration_seconds
    asyncio.run(_produce(source, handler, stop or threading.Event(), deadline, on_round))
    return handler.stats


async def _produce(
    source: Source,
    handler: BatchHandler,
    stop: threading.Event,
    deadline: float | None,
    on_round: Callable[[], None],
) -> None:
    """The loop: wait for the next batch while watching ``stop`` and the deadline."""
    pending: asyncio.Task[Batch | None] | None = None
    try:
        while not _stopping(stop, deadline):
            on_round()
            if pending is None:
                pending = asyncio.create_task(_next_batch(source))
            await asyncio.wait({pending}, timeout=_poll_seconds(deadline))
            if not pending.done():
                continue
            batch, pending = pending.result(), None
            if batch is None:
                return
            await handler.handle(batch)
    finally:
        await _close(source, pending)


@dataclass
class BatchHandler:
    """Validates a batch, publishes its valid ticks in one call, counts everything."""

    validator: TickValidator
    publisher: Publisher
    stats: ProducerStats
    publish_retry_seconds: float = PUBLISH_RETRY_SECONDS

    async def handle(self, batch: Batch) -> None:
        """Validate and publish ``batch``; a Redis failure drops it and pauses."""
        ticks = self.validated_ticks(batch)
        if not ticks:
            return
        try:
            self.stats.count_published(self.publisher.publish(ticks))
        except (redis.ConnectionError, redis.TimeoutError) as error:
            self.stats.count_publish_error()
            logger.warning("dropped %d ticks, Redis failed: %s", len(ticks), error)
            await asyncio.sleep(self.publish_retry_seconds)

    def validated_ticks(self, batch: Batch) -> list[Tick]:
        """The valid ticks of ``batch``; every other item is counted as a reject."""
        ticks = []
        for item in batch:
            if isinstance(item, Malformed):
                self.stats.count_reject(item.reason, _located(item.origin, item.message))
                continue
            try:
                ticks.append(self.validator.validate(item))
            except TickValidationError as rejection:
                self.stats.count_reject(rejection.reason, _located(item.origin, str(rejection)))
        return ticks


async def _next_batch(source: Source) -> Batch | None:
    """The source's next batch, or None when it has ended."""
    try:
        return await anext(source)
    except StopAsyncIteration:
        return None


async def _close(source: Source, pending: asyncio.Task[Batch | None] | None) -> None:
    """Cancel a pending read, then close the source (its connections, files)."""
    if pending is not None and not pending.done():
        pending.cancel()
        await asyncio.wait({pending})
    await source.aclose()


def _stopping(stop: threading.Event, deadline: float | None) -> bool:
    """Whether ``stop`` is set or the deadline has passed."""
    return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)


def _poll_seconds(deadline: float | None) -> float:
    """How long to wait for a batch before looking at stop and deadline."""
    if deadline is None:
        return POLL_SECONDS
    return max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))


def _located(origin: str, message: str) -> str:
    """``message`` prefixed with where the input came from."""
    return f"{origin}: {message}" if origin else message


def build_source(args: argparse.Namespace, known_symbols: Collection[str]) -> Source:
    """The source the command-line arguments ask for; ``SourceArgumentError`` if they can't."""
    if args.source == "synthetic":
        return synthetic_source(market_spec(args, known_symbols))
    if args.source == "replay":
        source = _replay(args)
    else:
        source = binance_source(args.url, ReconnectPolicy())
    symbols = _symbol_filter(args.symbols, known_symbols)
    return source if symbols is None else only_symbols(source, symbols)


def market_spec(args: argparse.Namespace, known_symbols: Collection[str]) -> MarketSpec:
    """The synthetic market of ``--symbols``, ``--seed``, ``--rate`` and ``--scenario``."""
    scenarios = _scenarios(args.scenario or [])
    symbols = synthetic_symbols(args.symbols, known_symbols, scenarios)
    missing = [s.symbol for s in scenarios if s.symbol not in symbols]
    if missing:
        raise SourceArgumentError(f"--scenario: {missing[0]} is not among the --symbols")
    return MarketSpec(symbols, args.seed, args.rate, scenarios=scenarios)


def synthetic_symbols(
    requested: int | list[str] | None, known_symbols: Collection[str], scenarios: Sequence[Scenario]
) -> tuple[str, ...]:
    """A list is taken as it is; a count (default 20, at most all known) picks scenario
    symbols, then the majors, then the rest by name."""
    if isinstance(requested, list):
        return tuple(_known(requested, known_symbols))
    preferred = [s.symbol for s in scenarios] + list(MAJOR_START_PRICES) + sorted(known_symbols)
    ordered = [symbol for symbol in dict.fromkeys(preferred) if symbol in known_symbols]
    count = min(DEFAULT_SYNTHETIC_SYMBOLS, len(ordered)) if requested is None else requested
    if count > len(ordered):
        raise SourceArgumentError(f"--symbols: {count} asked, {len(ordered)} symbols known")
    return tuple(ordered[:count])


def _scenarios(specs: Sequence[str]) -> tuple[Scenario, ...]:
    """The parsed ``--scenario`` specs."""
    try:
        return tuple(parse_scenario(spec) for spec in specs)
    except ScenarioError as error:
        raise SourceArgumentError(f"--scenario: {error}") from None


def _replay(args: argparse.Namespace) -> Source:
    """The replay source of ``--file``, ``--speed`` and ``--rebase-time``."""
    if args.file is None:
        raise SourceArgumentError("--file: required with --source replay")
    try:
        return replay_source(Path(args.file), speed=args.speed, rebase_to_now=args.rebase_time)
    except ReplayFileError as error:
        raise SourceArgumentError(f"--file: {error}") from None


def _symbol_filter(
    requested: int | list[str] | None, known_symbols: Collection[str]
) -> frozenset[str] | None:
    """The ``--symbols`` list to keep for replay and binance (None: all)."""
    if isinstance(requested, int):
        raise SourceArgumentError("--symbols: a count applies to --source synthetic; give names")
    return None if requested is None else frozenset(_known(requested, known_symbols))


def _known(symbols: list[str], known_symbols: Collection[str]) -> list[str]:
    """``symbols`` without repeats, each checked to be known."""
    unknown = [symbol for symbol in symbols if symbol not in known_symbols]
    if unknown:
        raise SourceArgumentError(f"--symbols: unknown symbol {unknown[0]}")
    return list(dict.fromkeys(symbols))

"""``marginwatch producer``: its options, and running it from parsed arguments.

Importing this module loads nothing heavy (``marginwatch evaluate`` builds the same parser);
Redis, websockets and numpy are imported when the producer runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from types import FrameType
from typing import TYPE_CHECKING

from marginwatch.base.exits import EXIT_OK

if TYPE_CHECKING:
    from marginwatch.base.health import Health
    from marginwatch.base.settings import Settings
    from marginwatch.producer.run import ProducerStats
    from marginwatch.producer.ticks import Source
    from marginwatch.producer.validation import TickValidator

DEFAULT_BINANCE_URL = "wss://fstream.binance.com/ws/!markPrice@arr@1s"
REDIS_TIMEOUT_SECONDS = 5.0

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the producer's options to ``parser``."""
    parser.add_argument("--source", choices=["synthetic", "replay", "binance"], default="synthetic")
    parser.add_argument(
        "--symbols",
        type=symbols_argument,
        help="synthetic: a count or a comma-separated list (default 20); others: a list to keep",
    )
    parser.add_argument("--rate", type=positive_float, default=1.0, help="ticks/s per symbol")
    parser.add_argument("--seed", type=int, default=1, help="synthetic market seed")
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="SPEC",
        help="scripted move, repeatable: SYMBOL:MOVE%%:DURATION[@START] (BTCUSDT:-12%%:30s@10s)",
    )
    parser.add_argument("--duration", type=positive_float, help="stop after SECONDS")
    parser.add_argument("--file", help="replay: a .csv or .jsonl file of recorded ticks")
    parser.add_argument(
        "--speed", type=non_negative_float, default=1.0, help="replay speed; 0: as fast as possible"
    )
    parser.add_argument(
        "--rebase-time", action="store_true", help="replay: shift event times to start now"
    )
    parser.add_argument("--url", type=websocket_url, default=DEFAULT_BINANCE_URL)
    parser.add_argument(
        "--max-jump-ratio",
        type=positive_decimal,
        help="reject a tick moving more than this from the last (default: the setting)",
    )


def run(args: argparse.Namespace, settings: Settings, known_symbols: set[str]) -> int:
    """Run the producer until ``--duration``, the source's end, SIGINT or SIGTERM; exit status.
    Bad options or settings raise ``ConfigurationError``; an unreachable Redis, Redis' error."""
    from marginwatch.base.settings import ConfigurationError, redis_url  # noqa: PLC0415 (see module doc)
    from marginwatch.producer.run import SourceArgumentError, build_source  # noqa: PLC0415

    url = redis_url(settings)
    try:
        source = build_source(args, known_symbols)
    except SourceArgumentError as error:
        raise ConfigurationError(str(error)) from None
    validator = _validator(known_symbols, args.max_jump_ratio or settings.max_jump_ratio)
    health = _health(url)
    with _metrics_served(settings.metrics_port, health) as stats:
        return _run_source(url, source, validator, args.duration, stats, health)


def _health(redis_url: str) -> Health:
    """The producer is ready while Redis answers (its loop's heartbeat is added as it runs)."""
    from marginwatch.base.health import Health  # noqa: PLC0415 (see module doc)
    from marginwatch.runtime.health import fail_fast_redis, redis_reachable  # noqa: PLC0415

    health = Health()
    health.check(redis_reachable(fail_fast_redis(redis_url)))
    return health


@contextmanager
def _metrics_served(port: int | None, health: Health) -> Iterator[ProducerStats]:
    """Stats whose counts move the producer's metrics, served with ``health`` on ``port`` (if
    set) inside."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 (see module doc)

    from marginwatch.base.metrics import ProducerMetrics, metrics_url, serve_metrics  # noqa: PLC0415
    from marginwatch.base.settings import ConfigurationError, env_name  # noqa: PLC0415
    from marginwatch.producer.run import ProducerStats  # noqa: PLC0415
    from marginwatch.producer.validation import REJECT_REASONS  # noqa: PLC0415

    registry = CollectorRegistry()
    stats = ProducerStats(metrics=ProducerMetrics(registry, REJECT_REASONS))
    try:
        server = serve_metrics(registry, port, health=health)
    except OSError as error:
        raise ConfigurationError(
            f"{env_name('metrics_port')}={port}: cannot listen ({error.strerror})"
        ) from None
    if server is None:
        yield stats
        return
    logger.info("serving metrics on %s", metrics_url(server))
    try:
        yield stats
    finally:
        server.shutdown()
        server.server_close()


def _validator(known_symbols: set[str], max_jump_ratio: Decimal | None) -> TickValidator:
    """The validator of the known symbols and the jump ratio in force."""
    from marginwatch.producer.validation import TickValidator  # noqa: PLC0415 (see module doc)

    return TickValidator(known_symbols, max_jump_ratio)


def _run_source(
    redis_url: str,
    source: Source,
    validator: TickValidator,
    duration_seconds: float | None,
    stats: ProducerStats,
    health: Health,
) -> int:
    """Connect, run, log a summary line; an unreachable Redis raises Redis' error."""

    from marginwatch.base.redaction import redact_url  # noqa: PLC0415
    from marginwatch.producer.publisher import Publisher  # noqa: PLC0415
    from marginwatch.producer.run import run_producer  # noqa: PLC0415
    from marginwatch.runtime.health import LOOP_STALE_AFTER_SECONDS  # noqa: PLC0415
    from marginwatch.state.connection import open_redis  # noqa: PLC0415

    timeout = REDIS_TIMEOUT_SECONDS
    client = open_redis(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    stop = threading.Event()
    try:
        client.ping()  # before the first line is logged: Redis unreachable is one line alone
        logger.info("publishing to Redis at %s", redact_url(redis_url))
        with _stop_on_signals(stop):
            stats = run_producer(
                client,
                source,
                validator,
                Publisher(client),
                stop,
                duration_seconds=duration_seconds,
                stats=stats,
                on_round=health.heartbeat("producer", LOOP_STALE_AFTER_SECONDS).beat,
            )
    finally:
        client.close()
    logger.info("%s", stats.summary())
    return EXIT_OK


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT and SIGTERM while inside (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_number: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {
        number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, old_handler in previous.items():
            signal.signal(number, old_handler)


def symbols_argument(text: str) -> int | list[str]:
    """``--symbols``: a positive count, or comma-separated names (upper-cased)."""
    if text.strip().isdigit():
        count = int(text)
        if count < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return count
    symbols = [name.strip().upper() for name in text.split(",") if name.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError(f"expected a count or symbol names: {text!r}")
    return symbols


def positive_float(text: str) -> float:
    """A finite number above zero."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number at or above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number, not negative: {text!r}")
    return value


def positive_decimal(text: str) -> Decimal:
    """A finite decimal above zero."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def websocket_url(text: str) -> str:
    """A ``ws://`` or ``wss://`` URL."""
    if not text.startswith(("ws://", "wss://")):
        raise argparse.ArgumentTypeError(f"expected a ws:// or wss:// URL: {text!r}")
    return text

"""Feeding the metrics of ``marginwatch.metrics`` from what the plain functions return.

The evaluation and the actions stay plain functions returning outcomes; the task wrappers in
``worker.tasks`` hand those outcomes to the functions here. Celery's ``task_retry`` and
``task_failure`` signals count retries and final failures of the action and webhook tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import redis
from celery import Celery
from celery.signals import task_failure, task_retry
from prometheus_client import Counter

from marginwatch import keys
from marginwatch.contract import Tick
from marginwatch.engine import batch
from marginwatch.engine.types import Venue
from marginwatch.metrics import (
    ExecutorMetrics,
    WorkerMetrics,
    liquidation_band_notional,
    pool_counts,
)
from marginwatch.state.applier import AppliedCounts
from worker.celery_app import (
    TASK_DELIVER_WEBHOOK,
    TASK_LIQUIDATE,
    TASK_MARGIN_CALL,
    TASK_MARGIN_CALL_RESOLVED,
)
from worker.evaluation import EvaluationOutcome
from worker.liquidation import LiquidationOutcome
from worker.partition import CROSS_POOL, PartitionBook

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
LIQUIDATION_MAP_INTERVAL_SECONDS = 1.0
ACTION_OF_TASK = {
    TASK_MARGIN_CALL: "margin_call",
    TASK_MARGIN_CALL_RESOLVED: "margin_call_resolved",
    TASK_LIQUIDATE: "liquidate",
}


@contextmanager
def counting_redis_errors(counter: Counter) -> Iterator[None]:
    """Count a Redis connection or timeout error raised inside, and let it propagate."""
    try:
        yield
    except REDIS_ERRORS:
        counter.inc()
        raise


def age_seconds(now: float, event_time_ms: int) -> float:
    """Seconds from an event time (ms) to ``now`` (Unix seconds); at least 0 (clock skew)."""
    return max(0.0, now - event_time_ms / 1000.0)


# Partition workers.


def observe_evaluation(
    metrics: WorkerMetrics, book: PartitionBook, outcome: EvaluationOutcome, stale_after: float
) -> None:
    """Counters, durations and gauges of one finished evaluation."""
    label = str(book.partition)
    metrics.evaluations.labels(label).inc()
    metrics.positions_evaluated.labels(label).inc(outcome.positions)
    metrics.evaluation_duration.labels(label).observe(outcome.seconds)
    newest = outcome.newest_tick
    if newest is not None:
        age = age_seconds(outcome.started_at, newest.event_time_ms)
        metrics.tick_age.labels(label).observe(age)
    metrics.last_sequence.labels(label).set(newest.sequence if newest else 0)
    for task, count in outcome.sent.items():
        metrics.actions_sent.labels(ACTION_OF_TASK.get(task, task)).inc(count)


def observe_book_gauges(
    metrics: WorkerMetrics, book: PartitionBook, outcome: EvaluationOutcome, stale_after: float
) -> None:
    """Gauges of the whole book (stale symbols, pools by status, ratio distribution): array
    passes over every pool, so the caller throttles them (Prometheus scrapes every few s)."""
    stale = stale_symbols(book, outcome.ticks, outcome.started_at, stale_after)
    metrics.stale_symbols.labels(str(book.partition)).set(len(stale))
    observe_book(metrics, book)


def observe_book(metrics: WorkerMetrics, book: PartitionBook) -> None:
    """Pools by status and mode, and the cross-pool margin ratio distribution."""
    metrics.set_pools(book.partition, pool_counts(book.result.status, book.book.pool_isolated))
    metrics.cross_margin_ratio.update(book.partition, cross_ratios(book))


def cross_ratios(book: PartitionBook) -> batch.FloatArray:
    """Batch margin ratios of the cross pools that hold a position (``nan``: balance <= 0)."""
    holding = ~book.book.pool_isolated & (np.diff(book.book.pool_starts) > 0)
    return book.result.margin_ratio[holding]


def held_symbols(book: PartitionBook) -> list[str]:
    """Symbols of the partition's positions."""
    return [book.brackets.symbols[int(i)] for i in np.unique(book.book.symbol)]


def stale_symbols(
    book: PartitionBook, ticks: Mapping[str, Tick], now: float, stale_after: float
) -> list[str]:
    """Held symbols without a tick, or whose newest tick is older than ``stale_after``."""
    return [
        symbol
        for symbol in held_symbols(book)
        if symbol not in ticks or age_seconds(now, ticks[symbol].event_time_ms) > stale_after
    ]


@dataclass
class Throttle:
    """At most one ``due`` per key per ``interval`` seconds (monotonic clock)."""

    interval: float = LIQUIDATION_MAP_INTERVAL_SECONDS
    last: dict[int, float] = field(default_factory=dict)

    def due(self, key: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self.last.get(key, -math.inf) < self.interval:
            return False
        self.last[key] = now
        return True


def refresh_liquidation_map(
    metrics: WorkerMetrics, book: PartitionBook, marks: batch.FloatArray, venue: Venue
) -> None:
    """Batch liquidation prices of the book (after its ratios at ``marks``), banded by symbol."""
    batch.evaluate_liquidation_prices(book.book, book.brackets, marks, book.result, venue)
    rows = book.book
    notional = liquidation_band_notional(
        rows.symbol, rows.quantity, rows.group_starts, book.result.liquidation_price, marks
    )
    held = np.unique(rows.symbol)
    metrics.liquidation_map.update(
        book.partition, {book.brackets.symbols[int(i)]: notional[i] for i in held}
    )


# Executor.


def margin_mode(pool: str) -> str:
    """``cross`` or ``isolated``, from an action's pool name."""
    return "cross" if pool == CROSS_POOL else "isolated"


def observe_latency(metrics: ExecutorMetrics, task: str, action: Mapping[str, Any]) -> None:
    """Tick-to-action latency of an action whose event was just written."""
    event_time_ms = int(action.get("tick_event_time_ms") or 0)
    if event_time_ms > 0:
        latency = age_seconds(time.time(), event_time_ms)
        metrics.tick_to_action_latency.labels(ACTION_OF_TASK[task]).observe(latency)


def observe_margin_call(metrics: ExecutorMetrics, action: Mapping[str, Any], outcome: str) -> None:
    if outcome == "sent":
        metrics.margin_calls.labels(margin_mode(action["pool"])).inc()
        observe_latency(metrics, TASK_MARGIN_CALL, action)


def observe_resolution(metrics: ExecutorMetrics, action: Mapping[str, Any], outcome: str) -> None:
    if outcome == "sent":
        metrics.margin_call_resolutions.labels(margin_mode(action["pool"])).inc()
        observe_latency(metrics, TASK_MARGIN_CALL_RESOLVED, action)


def observe_liquidation(
    metrics: ExecutorMetrics, action: Mapping[str, Any], outcome: LiquidationOutcome
) -> None:
    """Liquidations and their notional, skips by reason."""
    if outcome.skip_reason is not None:
        metrics.liquidations_skipped.labels(outcome.skip_reason).inc()
    if outcome.result != "liquidated":
        return
    metrics.liquidations.labels(margin_mode(action["pool"])).inc()
    for closed in outcome.closed:
        notional = abs(closed.position.quantity) * closed.mark_price
        metrics.liquidated_notional.labels(closed.position.symbol).inc(float(notional))
    observe_latency(metrics, TASK_LIQUIDATE, action)


def observe_applied(metrics: ExecutorMetrics, counts: AppliedCounts) -> None:
    """The applier's ``on_step`` hook: account events by outcome."""
    metrics.account_events.labels("accepted").inc(counts.accepted)
    metrics.account_events.labels("rejected").inc(counts.rejected)
    metrics.account_events.labels("duplicate").inc(counts.duplicates)


def insurance_fund_reader(client: redis.Redis) -> Callable[[], float | None]:
    """Reads the insurance fund for a scrape (0 when unset; ``None`` when Redis fails)."""

    def read() -> float | None:
        try:
            stored = client.get(keys.INSURANCE_FUND)
        except redis.RedisError:
            return None
        return float(Decimal(stored.decode())) if isinstance(stored, bytes) else 0.0

    return read


def connect_task_signals(app: Celery, metrics: Callable[[], ExecutorMetrics]) -> None:
    """Count retries and final failures of ``app``'s action and webhook tasks.

    ``metrics`` is called at each signal, so the daemon may set its metrics after this.
    """

    def handler(kind: str) -> Callable[..., None]:
        def count(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "app", None) is app:
                count_task_signal(metrics(), sender.name, kind)

        return count

    task_retry.connect(handler("retry"), weak=False)
    task_failure.connect(handler("failure"), weak=False)


def count_task_signal(metrics: ExecutorMetrics, task: str, kind: str) -> None:
    """A ``retry`` or ``failure`` of ``task``: action retries/failures, webhook results."""
    if task in ACTION_OF_TASK:
        counter = metrics.action_retries if kind == "retry" else metrics.action_failures
        counter.labels(ACTION_OF_TASK[task]).inc()
    elif task == TASK_DELIVER_WEBHOOK:
        metrics.webhook_deliveries.labels("retried" if kind == "retry" else "failed").inc()

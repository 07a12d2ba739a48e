"""Feeding the partition workers' metrics (``marginwatch.base.metrics``) from what an
evaluation returns. The task wrapper in ``marginwatch.worker.tasks`` hands outcomes here."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from marginwatch.base.metrics import WorkerMetrics, liquidation_band_notional, pool_counts
from marginwatch.base.ticks import Tick
from marginwatch.engine import batch
from marginwatch.engine.types import Venue
from marginwatch.runtime.celery_app import QueueKind
from marginwatch.runtime.observe import age_seconds
from marginwatch.state.due import DueBacklog
from marginwatch.worker.evaluation import EvaluationOutcome
from marginwatch.worker.partition import PartitionBook

LIQUIDATION_MAP_INTERVAL_SECONDS = 5.0  # a pass over every row: once per scrape (5 s)
ONCE_A_SECOND = 1.0


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
    for kind, count in outcome.sent().items():
        metrics.actions_sent.labels(kind.value).inc(count)


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


def observe_due(metrics: WorkerMetrics, partition: int, due: DueBacklog, now: float) -> None:
    """The partition's due liquidations, and the age of the oldest (0 when none is due)."""
    age = 0.0 if due.oldest_ms is None else age_seconds(now, due.oldest_ms)
    metrics.oldest_due_liquidation.labels(str(partition)).set(age)
    metrics.liquidations_due.labels(str(partition)).set(due.count)


def observe_queues(metrics: WorkerMetrics, partition: int, queued: Mapping[QueueKind, int]) -> None:
    """Messages waiting in the partition's queues, by kind."""
    for kind, messages in queued.items():
        metrics.queue_messages.labels(kind.value, str(partition)).set(messages)


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

    interval: float = ONCE_A_SECOND
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

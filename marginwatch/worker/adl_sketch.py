"""A partition worker's ADL sketches: after an evaluation, at most every
``state.adl.ADL_INTERVAL_SECONDS`` per partition, its positions' LeveragePnl at the marks just
evaluated, summarised per symbol and side (``engine.adl``), replace the partition's in Redis,
for ``marginwatch status ACCOUNT`` to rank a position venue-wide.

Off the evaluation's path, as the stress scenarios are (``worker.stress_metrics``): the
evaluation copies what the scores need (the book's arrays, the pools' sums, the marks) and
hands the copy to the publisher's thread (``worker.background``: at the lowest CPU priority);
sorting the scores (numpy) releases the GIL. A
partition whose sketches are still being computed is not started again.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import redis

from marginwatch.engine import adl_batch, batch
from marginwatch.runtime.observe import REDIS_ERRORS
from marginwatch.state.adl import ADL_INTERVAL_SECONDS, side_key, write_sketches
from marginwatch.worker.background import background_thread
from marginwatch.worker.evaluation import EvaluationOutcome
from marginwatch.worker.partition import PartitionBook

log = logging.getLogger("marginwatch.worker")


@dataclass(frozen=True)
class ScoresInput:
    """A copy of what a partition's scores are computed from."""

    partition: int
    book: batch.Book
    result: batch.BatchResult
    marks: batch.FloatArray
    symbols: tuple[str, ...]

    @classmethod
    def of(cls, book: PartitionBook, outcome: EvaluationOutcome) -> ScoresInput:
        """Copies of the book's arrays, its pools' sums and the outcome's marks."""
        arrays = batch.Book(**{name: array.copy() for name, array in vars(book.book).items()})
        sums = batch.BatchResult(
            **{name: np.copy(array) for name, array in vars(book.result).items()}
        )
        return cls(book.partition, arrays, sums, outcome.marks.copy(), tuple(book.brackets.symbols))


@dataclass
class SketchPublisher:
    """The worker's thread for ADL sketches, and when each partition's were last started."""

    interval_seconds: float = ADL_INTERVAL_SECONDS
    started_at: dict[int, float] = field(default_factory=dict)  # monotonic s, per partition
    running: dict[int, Future[bool]] = field(default_factory=dict)
    thread: ThreadPoolExecutor = field(default_factory=lambda: background_thread("adl-sketches"))

    def due(self, partition: int, now: float) -> bool:
        """Whether the interval has passed since the partition's last start and none runs."""
        running = self.running.get(partition)
        if running is not None and not running.done():
            return False
        return now - self.started_at.get(partition, -np.inf) >= self.interval_seconds

    def publish_if_due(
        self, client: redis.Redis, book: PartitionBook, outcome: EvaluationOutcome,
        now: float | None = None,
    ) -> Future[bool] | None:  # fmt: skip
        """If due at ``now`` (monotonic seconds; default the clock's), start writing the
        partition's sketches from a copy of its figures; the write (``True`` once done), if
        one was started."""
        now = time.monotonic() if now is None else now
        if not self.due(book.partition, now):
            return None
        self.started_at[book.partition] = now
        started = self.thread.submit(publish, client, ScoresInput.of(book, outcome))
        self.running[book.partition] = started
        return started


def publish(client: redis.Redis, given: ScoresInput) -> bool:
    """The partition's sketches at the copied marks, written now (wall clock); ``False`` when
    that failed (logged: nothing else would see it in this thread)."""
    try:
        scores = adl_batch.row_scores(given.book, given.result, given.marks)
        sketches = {
            side_key(given.symbols[symbol], side): sketch
            for (symbol, side), sketch in adl_batch.sketches(given.book, scores).items()
        }
        write_sketches(client, given.partition, sketches, time.time())
    except REDIS_ERRORS:
        log.warning("partition %d: ADL sketches not stored (Redis)", given.partition)
        return False
    except Exception:
        log.exception("partition %d: ADL sketches failed", given.partition)
        return False
    return True

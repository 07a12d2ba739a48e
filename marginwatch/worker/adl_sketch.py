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
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import redis

from marginwatch.engine import adl_batch, batch
from marginwatch.runtime.observe import REDIS_ERRORS
from marginwatch.state.adl import ADL_INTERVAL_SECONDS, side_key, write_sketches
from marginwatch.worker.background import PartitionJobs
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
        arrays = book.book.copy()
        sums = batch.BatchResult(
            **{name: np.copy(array) for name, array in vars(book.result).items()}
        )
        return cls(book.partition, arrays, sums, outcome.marks.copy(), tuple(book.brackets.symbols))


def sketch_jobs() -> PartitionJobs:
    """The worker's thread for ADL sketches, each partition's every ``ADL_INTERVAL_SECONDS``."""
    return PartitionJobs("adl-sketches", ADL_INTERVAL_SECONDS)


def publish_if_due(
    jobs: PartitionJobs, client: redis.Redis, book: PartitionBook, outcome: EvaluationOutcome,
    now: float | None = None,
) -> Future[bool] | None:  # fmt: skip
    """If due at ``now`` (monotonic seconds; default the clock's), start writing the
    partition's sketches from a copy of its figures; the write (``True`` once done), if one
    was started."""
    if not jobs.claim(book.partition, now):
        return None
    return jobs.start(book.partition, publish, client, ScoresInput.of(book, outcome))


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

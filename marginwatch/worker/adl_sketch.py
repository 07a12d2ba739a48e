"""A partition worker's ADL sketches: after an evaluation, at most every
``state.adl.ADL_INTERVAL_SECONDS``, its positions' LeveragePnl at the marks just evaluated,
summarised per symbol and side (``engine.adl``), replace the partition's in Redis, for
``marginwatch status ACCOUNT`` to rank a position venue-wide.
"""

from __future__ import annotations

import time

import redis

from marginwatch.engine import adl_batch
from marginwatch.state.adl import ADL_INTERVAL_SECONDS, side_key, write_sketches
from marginwatch.worker.evaluation import EvaluationOutcome
from marginwatch.worker.partition import PartitionBook


def publish_if_due(client: redis.Redis, book: PartitionBook, outcome: EvaluationOutcome) -> bool:
    """Write the partition's sketches if the last were written ``ADL_INTERVAL_SECONDS`` ago or
    more (monotonic clock); whether it did."""
    now = time.monotonic()
    if now - book.adl_sketches_written_at < ADL_INTERVAL_SECONDS:
        return False
    publish(client, book, outcome)
    book.adl_sketches_written_at = now
    return True


def publish(client: redis.Redis, book: PartitionBook, outcome: EvaluationOutcome) -> None:
    """The partition's sketches at the outcome's marks, written now (wall clock)."""
    scores = adl_batch.row_scores(book.book, book.result, outcome.marks)
    symbols = book.brackets.symbols
    sketches = {
        side_key(symbols[symbol], side): sketch
        for (symbol, side), sketch in adl_batch.sketches(book.book, scores).items()
    }
    write_sketches(client, book.partition, sketches, time.time())

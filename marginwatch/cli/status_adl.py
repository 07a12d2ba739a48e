"""``status ACCOUNT``'s ADL quantiles: the account's positions ranked venue-wide, against every
partition's sketches (``state.adl``), without reading the book.

A position's score is exact, at the newest marks (``engine.adl.position_score``); ``below`` is
the sum of the partitions' estimates, at least the true count and less than ``Σ_p n_p / K``
more (``engine.adl``). The sketches are as old as their partitions' last writes, up to
``ADL_INTERVAL_SECONDS`` and more if a worker is behind: the report gives the oldest's age. When
a partition has written none yet, or one cannot be read, no quantile is given and the note
says which.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from marginwatch.base import keys
from marginwatch.base.report import AdlOut, AdlRanking
from marginwatch.engine.adl import hedge_shared, position_score, rank_key, sketched_quantile
from marginwatch.engine.exact import AccountReport
from marginwatch.state.adl import ADL_INTERVAL_SECONDS, PartitionSketches, read_sketches

STALE_AFTER_SECONDS = 2 * ADL_INTERVAL_SECONDS  # past this, a partition's worker is behind
RANKED = AdlRanking.PARTITION_SKETCHES


def venue_quantiles(
    client: redis.Redis, partitions: int, report: AccountReport, now: float
) -> tuple[tuple[int, ...] | None, AdlOut]:
    """Each position's quantile among the venue's (``None``: not known), and how it was
    ranked; ``now`` is the wall clock (Unix seconds)."""
    read = read_sketches(client, partitions, [rank_key(p.position) for p in report.positions])
    problem = missing_or_unreadable(read)
    if problem is not None:
        return None, AdlOut(ranked_among=RANKED, note=problem)
    quantiles = [
        sketched_quantile([found.sketches[rank_key(p.position)] for found in read],
                          float(position_score(p)))
        for p in report.positions
    ]  # fmt: skip
    age = max(0.0, now - min(found.written_at or now for found in read))
    ranked = AdlOut(ranked_among=RANKED, sketch_age_seconds=f"{age:.1f}",
                    rank_error_bound=error_bound(read, report))  # fmt: skip
    if age > STALE_AFTER_SECONDS:
        ranked = ranked.model_copy(update={"note": stale_note(age)})
    return hedge_shared([p.position for p in report.positions], quantiles), ranked


def stale_note(age: float) -> str:
    return (
        f"the oldest sketch is {age:.0f} s old (written every {ADL_INTERVAL_SECONDS:.0f} s): "
        "is every partition's worker running?"
    )


def missing_or_unreadable(read: Sequence[PartitionSketches]) -> str | None:
    """Why the sketches cannot rank: partitions without one yet, fields that cannot be read."""
    unreadable = [f"{keys.adl_sketches(found.partition)} {name}: {why}"
                  for found in read for name, why in found.unreadable.items()]  # fmt: skip
    if unreadable:
        return "adl_quantile left out, a sketch cannot be read: " + "; ".join(unreadable)
    missing = [str(found.partition) for found in read if found.written_at is None]
    if missing:
        return (
            f"adl_quantile left out: no ADL sketch yet from partition {', '.join(missing)} "
            f"(each partition's worker writes one every {ADL_INTERVAL_SECONDS:.0f} s)"
        )
    return None


def error_bound(read: Sequence[PartitionSketches], report: AccountReport) -> int:
    """The most positions by which any of the account's ``below`` may be overestimated."""
    keys_held = {rank_key(p.position) for p in report.positions}
    return max(
        (sum(found.sketches[key].error_bound for found in read) for key in keys_held), default=0
    )

"""One evaluation of a partition: newest marks, batch screening, decisions, actions.

The batch path screens the pools the new marks move (``PartitionBook.pools_to_evaluate``: those
holding a symbol that ticked, every pool after a change of layout and at an interval). The pools
where an action may be due are decided (``decisions``: by the screen where its error bound makes
it certain, else exactly): a margin call when a pool enters an episode (ratio >= margin call
ratio), its resolution when the ratio falls below ``margin_call_ratio -
margin_call_hysteresis``, a liquidation when the pool reaches ``liquidation`` (once per account
version).

Send, then remember: what is decided for a pool (its confirmed status, whether it
is in an episode) is kept aside as a ``Decision`` and applied by ``finish_evaluation``, which
the caller runs only after the actions are sent. An evaluation that fails before (a Redis error
while sending) changes no pool's memory, so its retry finds the same actions due.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.engine import batch
from marginwatch.engine.episodes import LIQUIDATION_CODE, candidate_pools
from marginwatch.engine.episodes import settle_quiet_pools as settle_pools
from marginwatch.state.due import due_pools, queue_due
from marginwatch.state.episodes import open_episodes
from marginwatch.worker.decisions import Decision, decide_candidates
from marginwatch.worker.partition import PartitionBook

RISKIEST_KEPT = 20
RISKIEST_INTERVAL_SECONDS = 1.0
NO_RATIO_SCORE = 1e9  # margin balance <= 0: riskier than any ratio


@dataclass
class EvaluationOutcome:
    """What one evaluation saw and did; ``started_at`` is wall-clock Unix seconds, ``ticks``
    and ``marks`` the prices it read (for metrics); ``actions`` what is due, in order."""

    positions: int = 0
    pools: int = 0
    accounts_refreshed: int = 0
    candidates: int = 0
    actions: list[Action] = field(default_factory=list)
    newest_tick: Tick | None = None
    seconds: float = 0.0  # from the start to the end of ``finish_evaluation``
    perf_started: float = 0.0  # perf_counter() at the start
    started_at: float = 0.0
    ticks: dict[str, Tick] = field(default_factory=dict, repr=False)
    marks: batch.FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)
    decisions: list[Decision] = field(default_factory=list, repr=False)
    evaluated: batch.IntArray | None = field(default=None, repr=False)  # None: every pool

    def sent(self) -> dict[ActionKind, int]:
        """How many actions of each kind are due."""
        counts: dict[ActionKind, int] = {}
        for action in self.actions:
            counts[action.kind] = counts.get(action.kind, 0) + 1
        return counts


def evaluate_partition(
    book: PartitionBook, client: redis.Redis, settings: Settings
) -> EvaluationOutcome:
    """Refresh the partition, screen it, confirm candidates; the outcome lists the due
    actions. The caller records them (``record_due``), sends them, then calls
    ``finish_evaluation``."""
    started, started_at = time.perf_counter(), time.time()
    ticks = book.ticks.read(client)
    refreshed = book.refresh(client)
    marks = book.brackets.marks_array({s: tick.mark_price for s, tick in ticks.items()})
    outcome = EvaluationOutcome(
        accounts_refreshed=refreshed, started_at=started_at, ticks=ticks, marks=marks
    )
    pools = outcome.evaluated = book.pools_to_evaluate(marks)
    batch.evaluate_ratios(book.book, book.brackets, marks, settings.thresholds, book.result,
                          pools, watched=(settings.rearm_below,))  # fmt: skip
    book.evaluated(marks, pools)
    candidates = select_candidates(book, settings, pools)
    settle_quiet_pools(book, candidates, pools)
    outcome.actions, outcome.decisions = decide_candidates(book, client, candidates, ticks,
                                                           settings)  # fmt: skip
    outcome.newest_tick = max(ticks.values(), key=lambda tick: tick.sequence, default=None)
    outcome.positions, outcome.pools = evaluated_size(book, pools)
    outcome.candidates = int(candidates.size)
    outcome.perf_started = started
    return outcome


def evaluated_size(book: PartitionBook, pools: batch.IntArray | None) -> tuple[int, int]:
    """(positions, pools) an evaluation of ``pools`` (``None``: every pool) went through."""
    if pools is None:
        return book.book.positions, book.book.pools
    sizes = book.book.pool_starts[pools + 1] - book.book.pool_starts[pools]
    return int(sizes.sum()), int(pools.size)


def select_candidates(
    book: PartitionBook, settings: Settings, pools: batch.IntArray | None = None
) -> batch.IntArray:
    """Of ``pools`` (``None``: every pool), those where an action may be due: to be confirmed
    with the exact path (``engine.episodes.candidate_pools``)."""
    pools = np.arange(book.book.pools) if pools is None else pools
    return candidate_pools(pools, book.result, book.confirmed_status, book.in_episode,
                           settings.rearm_below)  # fmt: skip


def settle_quiet_pools(
    book: PartitionBook, candidates: batch.IntArray, pools: batch.IntArray | None
) -> None:
    """Of ``pools``, those below margin call need no action: their batch status is their
    status."""
    pools = np.arange(book.book.pools) if pools is None else pools
    settle_pools(pools, candidates, book.result, book.confirmed_status)


def record_due(client: redis.Redis, book: PartitionBook, outcome: EvaluationOutcome) -> None:
    """Before its actions are sent: the liquidations about to be sent are due (so that an
    executor's removal always comes after, and a send that fails leaves them due, to be sent
    again)."""
    liquidations = [a for a in outcome.actions if a.kind is ActionKind.LIQUIDATION]
    if liquidations:
        pipe = client.pipeline(transaction=True)
        queue_due(pipe, book.partition, liquidations, int(outcome.started_at * 1000))
        pipe.execute()


def reconfirm_settled_liquidations(client: redis.Redis, book: PartitionBook) -> int:
    """Pools the book remembers as sent to liquidation whose liquidation is no longer due (an
    executor carried it out, or skipped it: rescued, gone) are confirmed again by the next
    evaluation, so one that is (still, or again) at liquidation is sent again; how many."""
    remembered = np.flatnonzero(book.confirmed_status == LIQUIDATION_CODE)
    if remembered.size == 0:
        return 0
    due = book.pools_mask(book.pool_code(a, pool) for a, pool in due_pools(client, book.partition))
    settled = remembered[~due[remembered]]
    book.reconsider(settled)
    return int(settled.size)


def reconcile_episodes(client: redis.Redis, book: PartitionBook) -> int:
    """Take each pool's episode flag from Redis (the partition's set of open episodes) where
    the book's differs: the executor declined a margin call or a resolution, or a pool closed
    and reopened between two refreshes. Such a pool is confirmed again by the next evaluation.
    Pools decided since the last call are left alone this time: their actions may still be on
    their way to the executor. How many were changed."""
    open_now = (book.pool_code(a, pool) for a, pool in open_episodes(client, book.partition))
    in_redis = book.pools_mask(open_now)
    recent = book.pools_mask(book.recently_decided)
    book.recently_decided.clear()
    differ = np.flatnonzero((in_redis != book.in_episode) & ~recent)
    book.in_episode[differ] = in_redis[differ]
    book.reconsider(differ)
    return int(differ.size)


def finish_evaluation(client: redis.Redis, book: PartitionBook, outcome: EvaluationOutcome) -> None:
    """After the outcome's actions are sent: remember the decisions, record progress, time
    the whole evaluation."""
    apply_decisions(book, outcome.decisions)
    book.settled(outcome.evaluated)
    write_progress(client, book, outcome)
    outcome.seconds = time.perf_counter() - outcome.perf_started


def apply_decisions(book: PartitionBook, decisions: list[Decision]) -> None:
    """Each decided pool's confirmed status and episode flag."""
    for decision in decisions:
        book.confirmed_status[decision.pool] = decision.status_code
        book.in_episode[decision.pool] = decision.in_episode
        book.recently_decided.add(int(book.pool_codes[decision.pool]))


def write_progress(client: redis.Redis, book: PartitionBook, outcome: EvaluationOutcome) -> None:
    """The newest tick sequence this evaluation read and, at most once per
    ``RISKIEST_INTERVAL_SECONDS``, the partition's riskiest pools (for ``status`` and the demo
    view), in one transaction (actions are already sent)."""
    pipe = client.pipeline(transaction=True)
    now = time.monotonic()
    if now - book.riskiest_written_at >= RISKIEST_INTERVAL_SECONDS:
        book.riskiest_written_at = now
        write_riskiest(pipe, book)
    newest = outcome.newest_tick
    pipe.set(keys.partition_evaluated(book.partition), newest.sequence if newest else 0)
    pipe.execute()


def write_riskiest(pipe: Pipeline, book: PartitionBook) -> None:
    """Queue the replacement of the partition's riskiest pools on ``pipe``."""
    ratio = np.where(
        book.result.status == LIQUIDATION_CODE, NO_RATIO_SCORE, book.result.margin_ratio
    )
    ratio = np.nan_to_num(ratio, nan=-1.0)
    count = min(RISKIEST_KEPT, ratio.shape[0])
    if count == 0:
        return
    top = np.argpartition(-ratio, count - 1)[:count]
    members = {"|".join(book.pool_key(int(i))): float(ratio[i]) for i in top}
    pipe.delete(keys.partition_status(book.partition))
    pipe.zadd(keys.partition_status(book.partition), members)

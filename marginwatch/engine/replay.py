"""Crash replay: a path of mark prices run through a book offline, by the live pipeline's rules
(``docs/replay.md``).

The book is laid out once for the batch screen (``stress.stress_book``). The path comes as
*moments*: the ticks sharing one event time, applied together. At each moment, as a partition
worker evaluates the newest marks:

1. the pools holding a symbol whose mark changed are screened (``batch.evaluate_ratios(...,
   pools=...)``, the re-arm level watched); the candidates (``episodes.candidate_pools``) are
   decided, by the screen where its error bound makes it certain and exactly (``Decimal``)
   where it does not, with ``episodes.due_for``;
2. the actions are executed in the order the worker sends them and the executor takes them:
   the margin calls, then the resolutions, then the liquidations, each in pool order. Each is
   confirmed exactly at the moment's marks first, as the executor does
   (``EpisodeRules.calls``/``resolves``; a liquidation on the account the one before left).
   A liquidation closes its pool out at mark (``closeout.close_out``: the fee out of what the
   pool holds, the deficit from the fund, an isolated remainder back to the cross wallet) and
   ends the pool's episode without a resolution;
3. the pools of the accounts a liquidation changed are evaluated again at the same marks, as
   the worker does once it reads the change (a cross pool may resolve on an isolated
   remainder), until no account changes.

A closed position stays in its row with quantity 0 (as ``worker.in_place`` does): a replay only
closes positions, so the layout never changes. Before the first moment the book is evaluated
at the snapshot's marks (moment 0), as a worker's first evaluation after loading it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from marginwatch.engine.batch import BatchResult, BracketArrays, IntArray, columns_of
from marginwatch.engine.batch import evaluate_ratios as screen
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.closeout import Closeout, close_out
from marginwatch.engine.episodes import (
    LIQUIDATION_CODE,
    Due,
    EpisodeRules,
    candidate_pools,
    due_for,
    settle_quiet_pools,
)
from marginwatch.engine.exact import PoolReport, evaluate_members
from marginwatch.engine.incremental import SymbolPools, changed_symbols
from marginwatch.engine.stress import stress_book
from marginwatch.engine.types import STATUS_ORDER, Account, Position, Status, Thresholds

UNKNOWN_STATUS = -1  # a pool not confirmed yet, or to be confirmed again
SNAPSHOT_MOMENT = 0


class EventKind(StrEnum):
    """What happened to a pool; the kinds of the live output streams' entries."""

    MARGIN_CALL = "margin_call"
    RESOLVED = "resolved"
    LIQUIDATION = "liquidation"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ReplayRules:
    """The settings' rules: thresholds, the episode levels, brackets, clearance fee rates."""

    thresholds: Thresholds
    episodes: EpisodeRules
    tables: Mapping[str, BracketTable]
    fee_rate: Callable[[str], Decimal]


@dataclass(frozen=True, slots=True)
class Moment:
    """The ticks of one event time: the new mark of each symbol they name."""

    event_time_ms: int
    marks: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One event of the timeline. ``moment`` 0 is the snapshot's marks; ``pool`` the pool's
    exact figures at the moment (for a liquidation: before it); ``closeout`` and
    ``insurance_fund`` (after it) for a liquidation; ``ended_episode``: it ended the pool's
    margin-call episode."""

    kind: EventKind
    moment: int
    event_time_ms: int | None
    account_id: str
    isolated: bool
    positions: tuple[Position, ...]
    pool: PoolReport
    closeout: Closeout | None = None
    insurance_fund: Decimal | None = None
    ended_episode: bool = False


@dataclass
class ReplayCounts:
    """How much work the replay did."""

    moments: int = 0
    pools_evaluated: int = 0
    candidates: int = 0
    exact_confirmations: int = 0


@dataclass
class Replay:
    """The book, its marks, each pool's memory (confirmed status, episode) and the fund, as the
    path so far leaves them."""

    accounts: list[Account]  # by account number, as the liquidations leave them
    marks: dict[str, Decimal]
    brackets: BracketArrays
    rules: ReplayRules
    fund: Decimal
    counts: ReplayCounts = field(default_factory=ReplayCounts)
    changed: set[int] = field(default_factory=set, init=False, repr=False)  # account numbers

    def __post_init__(self) -> None:
        self.original = tuple(self.accounts)
        layout = stress_book(columns_of(self.accounts, self.brackets), self.brackets)
        self.book, self.row_position = layout.book, layout.row_position
        self.floats = self.brackets.marks_array(self.marks)
        self.result = BatchResult.allocate(self.book)
        self.symbol_pools = SymbolPools.of(self.book, len(self.brackets.symbols))
        self.cross_pools = np.flatnonzero(~self.book.pool_isolated)
        pools = self.book.pools
        self.confirmed: npt.NDArray[np.int8] = np.full(pools, UNKNOWN_STATUS, dtype=np.int8)
        self.in_episode: npt.NDArray[np.bool_] = np.zeros(pools, dtype=np.bool_)

    def start(self) -> list[ReplayEvent]:
        """Moment 0: every pool at the snapshot's marks."""
        return self.evaluate(np.arange(self.book.pools), SNAPSHOT_MOMENT, None)

    def advance(self, moment: Moment) -> list[ReplayEvent]:
        """The next moment of the path: its marks, then the pools they move."""
        self.counts.moments += 1
        self.marks.update(moment.marks)
        previous, self.floats = self.floats, self.floats.copy()
        for symbol, mark in moment.marks.items():
            self.floats[self.brackets.index[symbol]] = float(mark)
        moved = self.symbol_pools.pools_of(changed_symbols(self.floats, previous))
        return self.evaluate(moved, self.counts.moments, moment.event_time_ms)

    def evaluate(self, pools: IntArray, moment: int, at_ms: int | None) -> list[ReplayEvent]:
        """Screen and decide ``pools``, execute what is due, and again for the accounts the
        liquidations changed, until none changes."""
        events: list[ReplayEvent] = []
        while pools.size:
            events += self.evaluate_once(pools, Stamp(moment, at_ms))
            pools = self.changed_pools()
        return events

    def evaluate_once(self, pools: IntArray, stamp: Stamp) -> list[ReplayEvent]:
        """One evaluation of ``pools``: its decisions, then their actions in sending order."""
        rules = self.rules
        screen(self.book, self.brackets, self.floats, rules.thresholds, self.result, pools,
               watched=(rules.episodes.rearm_below,))  # fmt: skip
        self.counts.pools_evaluated += int(pools.size)
        rearm = rules.episodes.rearm_below
        candidates = candidate_pools(pools, self.result, self.confirmed, self.in_episode, rearm)
        settle_quiet_pools(pools, candidates, self.result, self.confirmed)
        self.counts.candidates += int(candidates.size)
        dues = [(int(pool), self.decide(int(pool))) for pool in candidates]
        return Execution(self, stamp).run(dues)

    def decide(self, pool: int) -> Due:
        """A candidate's actions, from its confirmed figures; the pool's memory updated."""
        status, ratio = self.figures(pool)
        due = due_for(status, ratio, bool(self.in_episode[pool]),
                      self.confirmed[pool] == LIQUIDATION_CODE, self.rules.episodes)  # fmt: skip
        self.confirmed[pool] = status.severity
        self.in_episode[pool] = due.in_episode
        return due

    def figures(self, pool: int) -> tuple[Status, Decimal | None]:
        """The screen's status and ratio where it is certain, else the exact ones."""
        if self.result.uncertain[pool]:
            self.counts.exact_confirmations += 1
            report = self.exact(pool)
            return report.status, report.margin_ratio
        ratio = float(self.result.margin_ratio[pool])
        status = STATUS_ORDER[int(self.result.status[pool])]
        return status, None if math.isnan(ratio) else Decimal(repr(ratio))

    def exact(self, pool: int) -> PoolReport:
        """The pool's exact figures at the current marks, on its account as it is now."""
        account = self.accounts[self.account_of(pool)]
        members = self.members(pool)
        return evaluate_members(account, members, self.marks, self.rules.tables,
                                self.rules.thresholds)  # fmt: skip

    def account_of(self, pool: int) -> int:
        return int(self.book.pool_account[pool])

    def members(self, pool: int) -> tuple[Position, ...]:
        """The pool's open positions: the account's cross ones, or its isolated position
        (none once closed)."""
        number = self.account_of(pool)
        if not self.book.pool_isolated[pool]:
            return tuple(p for p in self.accounts[number].positions if not p.is_isolated)
        first = int(self.book.pool_starts[pool])
        if self.book.quantity[first] == 0.0:
            return ()
        return (self.original[number].positions[int(self.row_position[first])],)

    def account_pools(self, number: int) -> range:
        """The pools of account ``number`` (contiguous, its cross pool first)."""
        last = number + 1 >= self.cross_pools.shape[0]
        stop = self.book.pools if last else int(self.cross_pools[number + 1])
        return range(int(self.cross_pools[number]), stop)

    def close(self, pool: int, closeout: Closeout) -> None:
        """Write a liquidation into the arrays: the pool's rows closed, the cross wallet."""
        number = self.account_of(pool)
        self.accounts[number] = closeout.account_after
        starts = self.book.pool_starts
        self.book.quantity[starts[pool] : starts[pool + 1]] = 0.0
        if self.book.pool_isolated[pool]:
            self.book.pool_wallet[pool] = 0.0
        wallet = closeout.account_after.cross_wallet_balance
        self.book.pool_wallet[self.cross_pools[number]] = float(wallet)
        self.fund += closeout.insurance_fund_change
        self.changed.add(number)

    def changed_pools(self) -> IntArray:
        """The pools of the accounts changed since the last call, to be confirmed again."""
        ranges = [self.account_pools(number) for number in sorted(self.changed)]
        self.changed.clear()
        pools = np.array([pool for pools in ranges for pool in pools], dtype=np.int64)
        self.confirmed[pools] = UNKNOWN_STATUS
        return pools


@dataclass(frozen=True, slots=True)
class Stamp:
    """When an evaluation happens: the moment's number and event time."""

    moment: int
    event_time_ms: int | None


@dataclass
class Execution:
    """The actions of one evaluation, executed as the executor does."""

    replay: Replay
    stamp: Stamp

    def run(self, dues: Sequence[tuple[int, Due]]) -> list[ReplayEvent]:
        """Margin calls, then resolutions, then liquidations, each in pool order."""
        events = [self.margin_call(pool) for pool, due in dues if due.margin_call]
        events += [self.resolution(pool) for pool, due in dues if due.resolution]
        events += [self.liquidation(pool) for pool, due in dues if due.liquidation]
        return [event for event in events if event is not None]

    def margin_call(self, pool: int) -> ReplayEvent | None:
        """Emitted if the pool is still open and its exact ratio still calls for it; else the
        episode is not open."""
        report = self.replay.exact(pool)
        gone = not self.replay.members(pool)
        if gone or not self.replay.rules.episodes.calls(report.margin_ratio):
            self.replay.in_episode[pool] = False
            return None
        return self.event(EventKind.MARGIN_CALL, pool, report)

    def resolution(self, pool: int) -> ReplayEvent | None:
        """Emitted if the exact ratio is below the re-arm level; else the episode goes on."""
        report = self.replay.exact(pool)
        if not self.replay.rules.episodes.resolves(report.margin_ratio):
            self.replay.in_episode[pool] = True
            return None
        return self.event(EventKind.RESOLVED, pool, report)

    def liquidation(self, pool: int) -> ReplayEvent:
        """Closed out at mark if still at liquidation exactly; else skipped (rescued)."""
        replay = self.replay
        report = replay.exact(pool)
        if report.status is not Status.LIQUIDATION:
            replay.confirmed[pool] = UNKNOWN_STATUS
            return self.event(EventKind.SKIPPED, pool, report)
        account = replay.accounts[replay.account_of(pool)]
        positions = replay.members(pool)
        closeout = close_out(account, positions, replay.marks, replay.rules.fee_rate)
        ended = bool(replay.in_episode[pool])
        replay.in_episode[pool] = False
        replay.close(pool, closeout)
        return self.event(EventKind.LIQUIDATION, pool, report, positions, closeout, ended)

    def event(
        self,
        kind: EventKind,
        pool: int,
        report: PoolReport,
        positions: tuple[Position, ...] | None = None,
        closeout: Closeout | None = None,
        ended_episode: bool = False,
    ) -> ReplayEvent:
        replay = self.replay
        account = replay.accounts[replay.account_of(pool)]
        return ReplayEvent(
            kind=kind,
            moment=self.stamp.moment,
            event_time_ms=self.stamp.event_time_ms,
            account_id=account.account_id,
            isolated=bool(replay.book.pool_isolated[pool]),
            positions=replay.members(pool) if positions is None else positions,
            pool=report,
            closeout=closeout,
            insurance_fund=None if closeout is None else replay.fund,
            ended_episode=ended_episode,
        )


def replay_path(
    replay: Replay, moments: Iterable[Moment], after_moment: Callable[[int], None] | None = None
) -> list[ReplayEvent]:
    """Moment 0, then every moment of the path in order; the whole timeline. ``after_moment``
    is told each moment's number once it is done (a caller's progress)."""
    events = replay.start()
    for moment in moments:
        events += replay.advance(moment)
        if after_moment is not None:
            after_moment(replay.counts.moments)
    return events

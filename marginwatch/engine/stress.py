"""A stress scenario over a whole book: the batch screen at the shocked marks, aggregated, and
the largest contributors to the deficit confirmed exactly.

At the shocked marks ``MP'`` (``engine.scenarios``):

* every pool's status comes from the batch screen (``batch.evaluate_ratios``, one full pass); a
  pool the screen flags uncertain is decided by the exact path, so every status is the exact
  one;
* ``pools_margin_call`` and ``pools_liquidated`` count the pools of status ``margin_call`` and
  ``liquidation``; ``accounts_liquidated`` the accounts with at least one pool at liquidation;
* the liquidated notional of a symbol is ``Σ |Q| × MP'`` over the positions of the pools at
  liquidation;
* the deficit of a pool at liquidation is ``max(0, −(wallet + Σ UPNL))`` at ``MP'``: what its
  close-out at mark takes from the insurance fund (``closeout.close_out``: the clearance fee is
  charged only out of what the pool still holds, so fees never change the deficit, and the
  fees other close-outs would pay into the fund are not counted). The scenario's deficit is
  the sum over its pools at liquidation;
* the fund is exhausted when the deficit is positive and at least the fund
  (``fund_exhausted``);
* the largest contributors are the pools of the largest deficits, each evaluated exactly
  (``exact.evaluate_pool`` and ``closeout.close_out`` in ``Decimal``);
* when the fund is exhausted, who ADL would take: ``engine.stress_adl``.

The liquidated notional is a float sum of the screen, given to the cent. The deficit is the
contributors' exact deficits plus the screen's of the other pools, to the cent: exact when at
most ``top`` pools are in deficit. The contributors' figures are exact.

``engine.stress_screen`` is the screen's half of one round alone, in floats, with no exact
evaluation (the partition workers' stress metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import numpy.typing as npt

from marginwatch.engine import stress_adl
from marginwatch.engine.batch import (
    BatchResult,
    Book,
    BoolArray,
    BracketArrays,
    Columns,
    FloatArray,
    IntArray,
    book_from_columns,
    evaluate_ratios,
    row_pool,
)
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.closeout import close_out
from marginwatch.engine.exact import PoolReport, evaluate_members
from marginwatch.engine.impact import ImpactModel, impacted_moves
from marginwatch.engine.kernels import LIQUIDATION_CODE
from marginwatch.engine.scenarios import Scenario, shocked_marks
from marginwatch.engine.types import Account, Position, Status, Thresholds

MARGIN_CALL_CODE = Status.MARGIN_CALL.severity
CENT = Decimal("0.01")
# The screen's largest deficits confirmed exactly per contributor shown: room for pools whose
# float deficits are within rounding of each other.
CANDIDATES_PER_SHOWN = 2


@dataclass(frozen=True)
class StressBook:
    """A book laid out for the screen, with each row's position in its account."""

    book: Book
    brackets: BracketArrays
    row_position: IntArray  # per row: the index of its position in its account's positions
    row_pool: IntArray  # per row: its pool

    @property
    def accounts(self) -> int:
        return int(np.count_nonzero(~self.book.pool_isolated))

    @property
    def held_symbols(self) -> list[str]:
        """The symbols of the book's positions, in symbol-index order."""
        return [self.brackets.symbols[s] for s in np.unique(self.book.symbol)]


def stress_book(columns: Columns, brackets: BracketArrays) -> StressBook:
    """Lay out ``columns`` whose rows come account by account (numbers ascending), each
    account's positions in their order; a row's position index is its rank in its account."""
    counts = np.bincount(columns.account, minlength=columns.cross_wallet.shape[0])
    first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    rank = np.arange(columns.account.shape[0], dtype=np.int64) - first[columns.account]
    book, order = book_from_columns(columns)
    return StressBook(book, brackets, rank[order], row_pool(book))


def warm_up() -> None:
    """Load the screen's compiled loops (numba: the full pass and the listed pools') on an
    empty book, so that a timed run does not count their loading."""
    tables = BracketArrays(("X",), np.full((1, 2), np.inf), np.zeros((1, 2)), np.zeros((1, 2)),
                           {"X": 0})  # fmt: skip
    empty = Columns(np.zeros(0, np.int64), np.zeros(0, np.bool_), np.zeros(0, np.int32),
                    np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))  # fmt: skip
    book, _order = book_from_columns(empty)
    out = BatchResult.allocate(book)
    evaluate_ratios(book, tables, np.ones(1), Thresholds(), out)
    evaluate_ratios(book, tables, np.ones(1), Thresholds(), out, pools=np.zeros(0, np.int64))


@dataclass(frozen=True)
class ExactPath:
    """What deciding a pool exactly needs: its account by number, the bracket tables, the
    thresholds and each symbol's clearance fee rate."""

    account: Callable[[int], Account]
    tables: Mapping[str, BracketTable]
    thresholds: Thresholds
    fee_rate: Callable[[str], Decimal]


@dataclass(frozen=True, slots=True)
class ExactPool:
    """One pool at the shocked marks, exactly."""

    pool: int
    account: Account
    positions: tuple[Position, ...]
    isolated: bool
    report: PoolReport
    notional: Decimal  # Σ |Q| × MP'
    deficit: Decimal  # what its close-out at MP' takes from the insurance fund


@dataclass(frozen=True, slots=True)
class Round:
    """One round of a scenario: the marks it ran at (moved by ``moves`` since the round
    before; none in the first) and what it newly liquidated, from the screen to the cent."""

    number: int
    moves: Mapping[str, Decimal]
    marks: Mapping[str, Decimal]
    pools_liquidated: int
    liquidated_notional: Mapping[str, Decimal]  # Σ |Q| × MP per symbol
    net_sold: Mapping[str, Decimal]  # Σ Q × MP per symbol (engine.impact)
    deficit: Decimal


@dataclass(frozen=True)
class ScenarioOutcome:
    """One scenario's figures over the book (see the module docstring), over its rounds;
    ``converged``: the last round liquidated nothing more, or nothing moved the marks again."""

    scenario: Scenario
    moves: Mapping[str, Decimal]
    pools_margin_call: int
    pools_liquidated: int
    accounts_liquidated: int
    liquidated_notional: Mapping[str, Decimal]  # per symbol with any, to the cent
    deficit: Decimal  # the contributors' exactly, the other pools' to the cent
    contributors: tuple[ExactPool, ...]
    rounds: tuple[Round, ...] = ()
    converged: bool = True
    deleveraged: tuple[stress_adl.Deleveraging, ...] = ()  # with the fund exhausted


@dataclass(frozen=True, slots=True)
class Cascade:
    """How to run later rounds: the price impact of each round's liquidations, at most
    ``max_rounds`` rounds in all."""

    impact: ImpactModel
    max_rounds: int


class Rounds:
    """What the rounds of a scenario have liquidated so far, pool by pool."""

    def __init__(self, sb: StressBook) -> None:
        pools = sb.book.pools
        self.closed = np.zeros(pools, dtype=np.bool_)  # at liquidation in a round so far
        self.round_of = np.full(pools, -1, dtype=np.int64)  # the round's index, 0 first
        self.deficits = np.zeros(pools)  # each at the marks of its round
        self.notional = np.zeros(len(sb.brackets.symbols))
        self.marks: list[Mapping[str, Decimal]] = []
        self.rounds: list[Round] = []
        self.screened_at: Mapping[str, Decimal] = {}  # the marks of the last screen

    def add(
        self, sb: StressBook, out: BatchResult, newly: BoolArray, moved: Mapping[str, Decimal],
        marks: Mapping[str, Decimal],
    ) -> Round:  # fmt: skip
        """Close the pools ``newly`` at liquidation at ``marks``; their round's figures."""
        self.round_of[newly] = len(self.marks)
        self.marks.append(marks)
        self.closed |= newly
        deficits = pool_deficits(sb.book, out, newly)
        self.deficits += deficits
        notional, net_sold = symbol_sums(sb, sb.brackets.marks_array(marks), newly)
        self.notional += notional
        found = Round(
            number=len(self.marks),
            moves=moved,
            marks=marks,
            pools_liquidated=int(np.count_nonzero(newly)),
            liquidated_notional=cents_of(sb, notional),
            net_sold=cents_of(sb, net_sold),
            deficit=to_cent(float(deficits.sum())),
        )
        self.rounds.append(found)
        return found

    def marks_of(self, pool: int) -> Mapping[str, Decimal]:
        """The marks of the round that liquidated ``pool``."""
        return self.marks[int(self.round_of[pool])]


def run_scenario(
    sb: StressBook,
    exact: ExactPath,
    scenario: Scenario,
    moves: Mapping[str, Decimal],
    marks: Mapping[str, Decimal],
    top: int,
    out: BatchResult,
    cascade: Cascade | None = None,
    deleverage: stress_adl.Deleverage | None = None,
) -> ScenarioOutcome:
    """The scenario's outcome at the shocked ``marks`` (``out``: the screen's buffer), with
    a ``cascade`` its later rounds, each at the marks the round before moved, and with
    ``deleverage`` who ADL takes if the fund is exhausted."""
    rounds = Rounds(sb)
    status, converged = run_rounds(sb, exact, marks, out, rounds, cascade)
    closed = rounds.closed
    contributors = largest_contributors(sb, exact, rounds.marks_of, rounds.deficits, top)
    deficit = total_deficit(rounds.deficits, contributors)
    return ScenarioOutcome(
        scenario=scenario,
        moves=moves,
        pools_margin_call=int(np.count_nonzero((status == MARGIN_CALL_CODE) & ~closed)),
        pools_liquidated=int(np.count_nonzero(closed)),
        accounts_liquidated=int(np.unique(sb.book.pool_account[closed]).shape[0]),
        liquidated_notional=cents_of(sb, rounds.notional),
        deficit=deficit,
        contributors=contributors,
        rounds=tuple(rounds.rounds),
        converged=converged,
        deleveraged=deleveraged(sb, exact, rounds, out, deficit, deleverage),
    )


def deleveraged(
    sb: StressBook, exact: ExactPath, rounds: Rounds, out: BatchResult, deficit: Decimal,
    deleverage: stress_adl.Deleverage | None,
) -> tuple[stress_adl.Deleveraging, ...]:  # fmt: skip
    """Who ADL takes at the scenario's end, when asked and the fund is exhausted."""
    if deleverage is None or not fund_exhausted(deficit, deleverage.fund):
        return ()
    end = stress_adl.ScenarioEnd(
        rounds.screened_at, out, rounds.closed, rounds.deficits, deficit, deleverage.fund
    )
    return stress_adl.deleveraged(
        sb, end, deleverage, lambda pool: exact_report(sb, exact, end.marks, pool)
    )


def run_rounds(
    sb: StressBook, exact: ExactPath, marks: Mapping[str, Decimal], out: BatchResult,
    rounds: Rounds, cascade: Cascade | None,
) -> tuple[npt.NDArray[np.int8], bool]:  # fmt: skip
    """Round after round until one liquidates nothing more (after the first), moves no mark,
    or is the last the cascade allows; the last statuses, and whether it converged."""
    moved: Mapping[str, Decimal] = {}
    while True:
        rounds.screened_at = marks
        evaluate_ratios(sb.book, sb.brackets, sb.brackets.marks_array(marks), exact.thresholds, out)
        status = decided_status(sb, exact, marks, out, rounds.closed)
        newly = (status == LIQUIDATION_CODE) & ~rounds.closed
        if rounds.rounds and not newly.any():
            return status, True
        found = rounds.add(sb, out, newly, moved, marks)
        if cascade is None:
            return status, True
        moved = impacted_moves(cascade.impact, found.net_sold)
        if not moved:
            return status, True
        if len(rounds.rounds) == cascade.max_rounds:
            return status, False
        marks = shocked_marks(marks, moved)


def decided_status(
    sb: StressBook,
    exact: ExactPath,
    marks: Mapping[str, Decimal],
    out: BatchResult,
    closed: BoolArray,
) -> npt.NDArray[np.int8]:
    """The screen's statuses, each uncertain pool's (not yet closed) decided exactly."""
    status = out.status.copy()
    for pool in np.flatnonzero(out.uncertain & ~closed):
        status[pool] = exact_pool(sb, exact, marks, int(pool)).report.status.severity
    return status


def pool_deficits(book: Book, out: BatchResult, liquidated: BoolArray) -> FloatArray:
    """Per pool: ``max(0, −(wallet + Σ UPNL))`` at liquidation, 0 otherwise."""
    balance = book.pool_wallet + out.upnl
    return np.where(liquidated, np.maximum(0.0, -balance), 0.0)


def total_deficit(deficits: FloatArray, contributors: Sequence[ExactPool]) -> Decimal:
    """``Σ deficit``: the contributors' exact deficits, plus the screen's of every other pool
    rounded to the cent (exact when the contributors are every pool in deficit)."""
    others = deficits.copy()
    others[[found.pool for found in contributors]] = 0.0
    rest = to_cent(float(others.sum())) if np.any(others > 0) else Decimal(0)
    return sum((found.deficit for found in contributors), rest)


def symbol_sums(
    sb: StressBook, floats: FloatArray, pools: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Per symbol, over the rows of ``pools`` at the marks ``floats``: ``Σ |Q| × MP`` (the
    notional) and ``Σ Q × MP`` (the net sale of closing them)."""
    return row_sums(sb.book, sb.row_pool, floats, pools)


def row_sums(
    book: Book, row_pools: IntArray, floats: FloatArray, pools: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """``symbol_sums`` over a bare book (``row_pools``: ``batch.row_pool(book)``), per symbol
    index of ``floats``."""
    rows = pools[row_pools]
    symbol = book.symbol[rows]
    signed = book.quantity[rows] * floats[symbol]
    count = floats.shape[0]
    notional = np.bincount(symbol, weights=np.abs(signed), minlength=count)
    net = np.bincount(symbol, weights=signed, minlength=count)
    return notional.astype(np.float64, copy=False), net.astype(np.float64, copy=False)


def cents_of(sb: StressBook, sums: FloatArray) -> dict[str, Decimal]:
    """Per symbol with a non-zero sum: the sum to the cent."""
    return {sb.brackets.symbols[s]: to_cent(float(sums[s])) for s in np.flatnonzero(sums)}


def largest_contributors(
    sb: StressBook,
    exact: ExactPath,
    marks_of: Callable[[int], Mapping[str, Decimal]],
    deficits: FloatArray,
    top: int,
) -> tuple[ExactPool, ...]:
    """The ``top`` pools of the largest exact deficits (then by account id, then pool), among
    the ``CANDIDATES_PER_SHOWN × top`` largest of the screen; each at the marks of its round
    (``marks_of``)."""
    candidates = largest(deficits, CANDIDATES_PER_SHOWN * top)
    confirmed = [exact_pool(sb, exact, marks_of(int(p)), int(p)) for p in candidates]
    ranked = sorted(
        (found for found in confirmed if found.deficit > 0),
        key=lambda found: (-found.deficit, found.account.account_id, found.pool),
    )
    return tuple(ranked[:top])


def largest(values: FloatArray, count: int) -> IntArray:
    """The indices of the ``count`` largest positive ``values``, largest first."""
    positive = np.flatnonzero(values > 0)
    if count <= 0:
        return positive[:0]
    if positive.shape[0] > count:
        positive = positive[np.argpartition(-values[positive], count - 1)[:count]]
    return positive[np.argsort(-values[positive], kind="stable")]


def exact_pool(
    sb: StressBook, exact: ExactPath, marks: Mapping[str, Decimal], pool: int
) -> ExactPool:
    """A pool evaluated exactly at ``marks``: its status, and its close-out's deficit."""
    account, positions = pool_members(sb, exact, pool)
    report = evaluate_members(account, positions, marks, exact.tables, exact.thresholds)
    closed = close_out(account, positions, dict(marks), exact.fee_rate)
    notional = sum((abs(p.quantity) * marks[p.symbol] for p in positions), Decimal(0))
    isolated = bool(sb.book.pool_isolated[pool])
    return ExactPool(pool, account, positions, isolated, report, notional, closed.deficit_covered)


def exact_report(
    sb: StressBook, exact: ExactPath, marks: Mapping[str, Decimal], pool: int
) -> stress_adl.ExactReport:
    """A pool's account, and the pool evaluated exactly at ``marks``."""
    account, positions = pool_members(sb, exact, pool)
    return account, evaluate_members(account, positions, marks, exact.tables, exact.thresholds)


def pool_members(
    sb: StressBook, exact: ExactPath, pool: int
) -> tuple[Account, tuple[Position, ...]]:
    """A pool's account, as the exact path reads it, and the pool's positions in it."""
    account = exact.account(int(sb.book.pool_account[pool]))
    return account, pool_positions(sb, account, pool)


def pool_positions(sb: StressBook, account: Account, pool: int) -> tuple[Position, ...]:
    """The account's cross positions, or the isolated position of the pool."""
    if not sb.book.pool_isolated[pool]:
        return tuple(p for p in account.positions if not p.is_isolated)
    return (account.positions[int(sb.row_position[sb.book.pool_starts[pool]])],)


def to_cent(value: float) -> Decimal:
    """A float sum as a decimal, rounded half-even to the cent."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)


def fund_exhausted(deficit: Decimal, fund: Decimal) -> bool:
    """Whether the deficit leaves the fund at zero or below: ``deficit > 0`` and
    ``deficit >= fund``."""
    return deficit > 0 and deficit >= fund

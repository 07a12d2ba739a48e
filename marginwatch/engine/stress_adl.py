"""Who a stress scenario deleverages when its deficit exhausts the insurance fund (ADL,
reference §2.7), ranked over the whole book (``engine.adl``, ``engine.adl_batch``).

When ``stress.fund_exhausted`` (deficit ``D > 0`` and ``D >= F``), at the marks the scenario
ended at (its last round's):

* the *bankrupt* positions are those of the pools liquidated with a deficit (in any round);
  per symbol and side of theirs, ``Σ |Q|`` is the bankrupt quantity;
* the quantity to deleverage is estimated as ``Σ |Q_bankrupt| × (D − max(0, F)) / D``: the share
  of the scenario's deficit the fund cannot take, applied to every bankrupt quantity alike. It is
  an estimate: ADL closes the counterparties at each bankrupt order's bankruptcy price, and which
  bankrupt orders the fund would still take first is not modelled;
* the counterparties are the positions of the opposite side of the symbol in pools not
  liquidated in any round, scored by LeveragePnl at those marks and ranked highest first (ties in
  book order); each has its quantile among them (``adl_batch.row_quantiles``);
* from the top, each counterparty gives ``min(|Q|, what is left)`` until the quantity is filled:
  ``filled_by`` counts the counterparties needed (all of them when they cannot fill it, then
  ``unfilled`` is what is left).

Quantities are summed exactly in units of ``10⁻⁸`` (``quantity_units``); the ``top``
counterparties shown are exact (their score by the exact path, their quantity and what they
give in ``Decimal``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING

import numpy as np

from marginwatch.engine import adl_batch
from marginwatch.engine.adl import SIDES, leverage_pnl
from marginwatch.engine.batch import BatchResult, BoolArray, FloatArray, IntArray
from marginwatch.engine.formulas import ZERO, unrealized_pnl
from marginwatch.engine.types import Account, Position, PositionSide

if TYPE_CHECKING:  # stress imports this module
    from marginwatch.engine.stress import ExactPool, StressBook

UNIT_DIGITS = 8  # quantities are summed in units of 10⁻⁸
QUANTITY_PLACES = Decimal(1).scaleb(-UNIT_DIGITS)


@dataclass(frozen=True, slots=True)
class Deleverage:
    """When a scenario's deficit exhausts ``fund``: rank who ADL takes, the ``top`` shown."""

    fund: Decimal
    top: int


@dataclass(frozen=True, slots=True)
class Counterparty:
    """A counterparty position shown, exactly: its score, quantile and what it gives."""

    account: Account
    position: Position
    leverage_pnl: Decimal
    quantile: int
    taken: Decimal  # of |Q|


@dataclass(frozen=True, slots=True)
class Deleveraging:
    """What ADL takes for one symbol and bankrupt side (see the module docstring)."""

    symbol: str
    bankrupt_side: PositionSide
    bankrupt_quantity: Decimal
    quantity: Decimal  # to deleverage, estimated
    counterparties: int  # ranked
    filled_by: int
    unfilled: Decimal
    top: tuple[Counterparty, ...]


@dataclass(frozen=True)
class ScenarioEnd:
    """A scenario's end, as ADL needs it: its marks (``out`` holds the screen at them), the
    pools liquidated in any round, and each pool's deficit."""

    marks: Mapping[str, Decimal]
    out: BatchResult
    closed: BoolArray
    deficits: FloatArray
    deficit: Decimal
    fund: Decimal


def deleveraged(
    sb: StressBook, end: ScenarioEnd, top: int, pool_at: Callable[[int], ExactPool]
) -> tuple[Deleveraging, ...]:
    """Per symbol and side of the bankrupt positions, by symbol then side: what ADL takes;
    ``pool_at`` evaluates a pool exactly at the end's marks."""
    book = sb.book
    scores = adl_batch.row_scores(book, end.out, sb.brackets.marks_array(end.marks))
    scores[end.closed[sb.row_pool]] = np.nan  # liquidated pools are not counterparties
    quantiles = adl_batch.row_quantiles(book, scores)
    key = 2 * book.symbol.astype(np.int64) + adl_batch.row_sides(book)
    bankrupt = ((end.deficits > 0.0)[sb.row_pool]) & (book.quantity != 0.0)
    held = np.zeros(2 * len(sb.brackets.symbols), dtype=np.int64)
    np.add.at(held, key[bankrupt], quantity_units(book.quantity[bankrupt]))
    share = (end.deficit - max(ZERO, end.fund)) / end.deficit
    ranked, ranked_key = ranked_counterparties(scores, key)
    return tuple(
        deleveraging(sb, end, int(k), of_units(int(held[k])), share,
                     of_key(ranked, ranked_key, int(k) ^ 1), quantiles, top, pool_at)
        for k in np.flatnonzero(held)
    )  # fmt: skip


def ranked_counterparties(scores: FloatArray, key: IntArray) -> tuple[IntArray, IntArray]:
    """The rows with a score, by key (``2 × symbol + side``), then highest score first, then
    in book order; and their keys."""
    rows = np.flatnonzero(np.isfinite(scores))
    ordered: IntArray = rows[np.lexsort((rows, -scores[rows], key[rows]))]
    return ordered, key[ordered]


def of_key(ranked: IntArray, ranked_key: IntArray, key: int) -> IntArray:
    """The ranked rows of ``key`` (the other side of a symbol: ``key ^ 1``)."""
    rows: IntArray = ranked[np.searchsorted(ranked_key, key) : np.searchsorted(ranked_key, key + 1)]
    return rows


def deleveraging(
    sb: StressBook, end: ScenarioEnd, key: int, held: Decimal, share: Decimal,
    ranked: IntArray, quantiles: adl_batch.Int8Array, top: int,
    pool_at: Callable[[int], ExactPool],
) -> Deleveraging:  # fmt: skip
    """One symbol and bankrupt side (``key``: ``2 × symbol + side``): the ranked
    counterparties filling ``share`` of the bankrupt quantity ``held``."""
    wanted = (held * share).quantize(QUANTITY_PLACES, rounding=ROUND_HALF_EVEN)
    filled = np.cumsum(quantity_units(sb.book.quantity[ranked]))
    needed = int(np.searchsorted(filled, int(wanted.scaleb(UNIT_DIGITS)))) + 1 if wanted else 0
    filled_by = min(needed, ranked.shape[0])
    unfilled = max(ZERO, wanted - of_units(int(filled[-1]) if ranked.size else 0))
    left, shown = wanted, []
    for row in ranked[:top]:
        counterparty = exact_counterparty(sb, end, int(row), int(quantiles[row]), left, pool_at)
        left -= counterparty.taken
        shown.append(counterparty)
    return Deleveraging(sb.brackets.symbols[key // 2], SIDES[key % 2], held, wanted,
                        int(ranked.shape[0]), filled_by, unfilled, tuple(shown))  # fmt: skip


def exact_counterparty(
    sb: StressBook, end: ScenarioEnd, row: int, quantile: int, left: Decimal,
    pool_at: Callable[[int], ExactPool],
) -> Counterparty:  # fmt: skip
    """Row ``row``'s position, scored exactly at the end's marks, giving up to ``left``."""
    pool = pool_at(int(sb.row_pool[row]))
    position = pool.account.positions[int(sb.row_position[row])]
    upnl = unrealized_pnl(position.quantity, position.entry_price, end.marks[position.symbol])
    report = pool.report
    score = leverage_pnl(
        upnl, report.wallet_balance, report.maintenance_margin, report.margin_balance
    )
    taken = min(abs(position.quantity), max(ZERO, left))
    return Counterparty(pool.account, position, score, quantile, taken)


def quantity_units(quantities: FloatArray) -> IntArray:
    """``|Q|`` in units of ``10⁻⁸`` (exact for a quantity of at most 8 decimals below about
    4.5e7: its float is within half a unit), so that sums of them are exact."""
    units: IntArray = np.rint(np.abs(quantities) * 10.0**UNIT_DIGITS).astype(np.int64)
    return units


def of_units(units: int) -> Decimal:
    """A quantity from its ``10⁻⁸`` units."""
    return Decimal(units).scaleb(-UNIT_DIGITS)

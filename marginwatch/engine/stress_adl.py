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

Quantities are summed exactly in units of ``10⁻⁸`` (``quantity_units``). Every symbol and
bankrupt side is listed; the ``top`` first counterparties are shown, exactly (their score by the
exact path, their quantity and what they give in ``Decimal``), for the ``symbols`` symbols and
sides of the largest notional to deleverage (``quantity × MP``) only: on a large book every
symbol has bankrupt positions, and the exact path costs a pool's evaluation per counterparty.
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
from marginwatch.engine.exact import PoolReport
from marginwatch.engine.formulas import ZERO, unrealized_pnl
from marginwatch.engine.types import Account, Position, PositionSide

if TYPE_CHECKING:  # stress imports this module
    from marginwatch.engine.stress import StressBook

ExactReport = tuple[Account, PoolReport]  # a pool's account and its exact report

UNIT_DIGITS = 8  # quantities are summed in units of 10⁻⁸
QUANTITY_PLACES = Decimal(1).scaleb(-UNIT_DIGITS)


@dataclass(frozen=True, slots=True)
class Deleverage:
    """When a scenario's deficit exhausts ``fund``: rank who ADL takes, the ``top`` first
    counterparties shown for the ``symbols`` symbols and sides of the most to deleverage."""

    fund: Decimal
    top: int
    symbols: int


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
    detailed: bool  # among the symbols and sides whose first counterparties are shown


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
    sb: StressBook, end: ScenarioEnd, shown: Deleverage, pool_at: Callable[[int], ExactReport]
) -> tuple[Deleveraging, ...]:
    """Per symbol and side of the bankrupt positions, by symbol then side: what ADL takes;
    ``pool_at`` evaluates a pool exactly at the end's marks."""
    book = sb.book
    scores = adl_batch.row_scores(book, end.out, sb.brackets.marks_array(end.marks))
    scores[end.closed[sb.row_pool]] = np.nan  # liquidated pools are not counterparties
    ranked, ranked_key = adl_batch.ranked_descending(book, scores)
    quantiles = adl_batch.row_quantiles(book, scores, (ranked, ranked_key))
    key = 2 * book.symbol.astype(np.int64) + adl_batch.row_sides(book)
    bankrupt = ((end.deficits > 0.0)[sb.row_pool]) & (book.quantity != 0.0)
    held = np.zeros(2 * len(sb.brackets.symbols), dtype=np.int64)
    np.add.at(held, key[bankrupt], quantity_units(book.quantity[bankrupt]))
    share = (end.deficit - max(ZERO, end.fund)) / end.deficit
    detailed = most_to_deleverage(sb, end, held, shown.symbols)
    return tuple(
        deleveraging(sb, end, int(k), of_units(int(held[k])), share,
                     of_key(ranked, ranked_key, int(k) ^ 1), quantiles,
                     shown.top if k in detailed else None, pool_at)
        for k in np.flatnonzero(held)
    )  # fmt: skip


def most_to_deleverage(sb: StressBook, end: ScenarioEnd, held: IntArray, count: int) -> set[int]:
    """The ``count`` keys of the largest bankrupt notional ``Σ |Q| × MP`` (the same share of
    each is deleveraged), ties to the lower key."""
    keys = np.flatnonzero(held)
    marks = sb.brackets.marks_array(end.marks)
    notional = held[keys] * marks[keys // 2]
    return {int(k) for k in keys[np.argsort(-notional, kind="stable")[:count]]}


def of_key(ranked: IntArray, ranked_key: IntArray, key: int) -> IntArray:
    """The ranked rows of ``key`` (the other side of a symbol: ``key ^ 1``)."""
    rows: IntArray = ranked[np.searchsorted(ranked_key, key) : np.searchsorted(ranked_key, key + 1)]
    return rows


def deleveraging(
    sb: StressBook, end: ScenarioEnd, key: int, held: Decimal, share: Decimal,
    ranked: IntArray, quantiles: adl_batch.Int8Array, top: int | None,
    pool_at: Callable[[int], ExactReport],
) -> Deleveraging:  # fmt: skip
    """One symbol and bankrupt side (``key``: ``2 × symbol + side``): the ranked
    counterparties filling ``share`` of the bankrupt quantity ``held``, the ``top`` first
    shown (``None``: not detailed, none shown)."""
    wanted = (held * share).quantize(QUANTITY_PLACES, rounding=ROUND_HALF_EVEN)
    filled = np.cumsum(quantity_units(sb.book.quantity[ranked]))
    needed = int(np.searchsorted(filled, int(wanted.scaleb(UNIT_DIGITS)))) + 1 if wanted else 0
    filled_by = min(needed, ranked.shape[0])
    unfilled = max(ZERO, wanted - of_units(int(filled[-1]) if ranked.size else 0))
    left, shown = wanted, []
    for row in ranked[: top or 0]:
        counterparty = exact_counterparty(sb, end, int(row), int(quantiles[row]), left, pool_at)
        left -= counterparty.taken
        shown.append(counterparty)
    return Deleveraging(sb.brackets.symbols[key // 2], SIDES[key % 2], held, wanted,
                        int(ranked.shape[0]), filled_by, unfilled, tuple(shown),
                        top is not None)  # fmt: skip


def exact_counterparty(
    sb: StressBook, end: ScenarioEnd, row: int, quantile: int, left: Decimal,
    pool_at: Callable[[int], ExactReport],
) -> Counterparty:  # fmt: skip
    """Row ``row``'s position, scored exactly at the end's marks, giving up to ``left``."""
    account, report = pool_at(int(sb.row_pool[row]))
    position = account.positions[int(sb.row_position[row])]
    upnl = unrealized_pnl(position.quantity, position.entry_price, end.marks[position.symbol])
    score = leverage_pnl(
        upnl, report.wallet_balance, report.maintenance_margin, report.margin_balance
    )
    taken = min(abs(position.quantity), max(ZERO, left))
    return Counterparty(account, position, score, quantile, taken)


def quantity_units(quantities: FloatArray) -> IntArray:
    """``|Q|`` in units of ``10⁻⁸`` (exact for a quantity of at most 8 decimals below about
    4.5e7: its float is within half a unit), so that sums of them are exact."""
    units: IntArray = np.rint(np.abs(quantities) * 10.0**UNIT_DIGITS).astype(np.int64)
    return units


def of_units(units: int) -> Decimal:
    """A quantity from its ``10⁻⁸`` units."""
    return Decimal(units).scaleb(-UNIT_DIGITS)

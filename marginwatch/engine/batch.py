"""The batch path: a whole book of positions as column arrays, screened in one pass.

Layout (one row per position, float64 money, no Python objects on the hot path):

* rows are ordered by account; inside an account the cross legs come first, ordered by
  symbol, then each isolated position;
* a *pool* (an account's cross pool, or one isolated position) is a contiguous row range
  ``pool_starts[p]:pool_starts[p + 1]``; every account has exactly one cross pool, possibly
  empty;
* a *group* (the legs sharing one liquidation price: the cross legs of one symbol, or one
  isolated position) is a contiguous range ``group_starts[g]:group_starts[g + 1]``.

A row of quantity 0 is a position closed in place (``worker.in_place``): it adds nothing, and a
pool holding only such rows is empty.

Floats screen; the exact path decides where floats could be wrong. A pool whose status could
flip under float rounding is flagged ``uncertain`` and is confirmed exactly by the caller; any
other pool's status is the exact status.

The error bound. With ``u = 2⁻⁵³`` (float64's unit roundoff), each input (``Q``, ``EP``, the
mark, a tier's rate and amount) is its decimal within a relative ``u``. A row's
``MM = |Q|·P·rate − amount`` is then within about ``7u·|Q|·P`` (``amount <= |Q|·P·rate`` in the
row's tier, ``rate <= 1``), its ``UPNL = Q·(P − EP)`` within ``4u·|Q|·(P + EP)``, and each of the
``n`` additions of a pool's sums adds at most ``u`` times a partial sum. Every term is bounded by
``gross = |wallet| + Σ (|Q|·P + |Q|·EP + MM)``, so ``MM − t·(wallet + UPNL)`` for ``t <= 1`` is
within ``2u·(n + 10)·gross`` of its exact value: ``kernels.ROUNDING_PER_ROW × (n +
ROUNDING_FIXED_ROWS)``, relative to ``gross``. The screen flags a pool whose gap to a threshold
(or to a watched level) is within ``max(UNCERTAINTY_BAND, that) × gross``; ``UNCERTAINTY_BAND``
(1e-12) covers pools of up to about 4,000 rows (a cross pool has at most two rows per symbol).
``tests/test_properties.py`` checks the bound on random books.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from marginwatch.engine import kernels
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Account, Thresholds, Venue

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

# Relative band of float uncertainty around each threshold (see kernels.evaluate_pools).
UNCERTAINTY_BAND = 1e-12


def rounding_bound(rows: int) -> float:
    """The screen's bound on the rounding error of a pool of ``rows`` rows, relative to its
    gross (see the module docstring)."""
    return kernels.ROUNDING_PER_ROW * (rows + kernels.ROUNDING_FIXED_ROWS)


@dataclass(frozen=True)
class BracketArrays:
    """Bracket tables of ``symbols`` as padded ``[symbol, tier]`` arrays."""

    symbols: tuple[str, ...]
    floors: FloatArray
    rates: FloatArray
    amounts: FloatArray
    index: Mapping[str, int] = field(repr=False)

    @classmethod
    def from_tables(
        cls, tables: Mapping[str, BracketTable], symbols: Sequence[str]
    ) -> BracketArrays:
        """Pad every table to the longest plus one; ``floors`` past a table's end are ``inf``."""
        depth = 1 + max(len(tables[symbol].brackets) for symbol in symbols)
        shape = (len(symbols), depth)
        floors, rates, amounts = np.full(shape, np.inf), np.zeros(shape), np.zeros(shape)
        for row, symbol in enumerate(symbols):
            brackets = tables[symbol].brackets
            floors[row, : len(brackets)] = [float(b.notional_floor) for b in brackets]
            rates[row, : len(brackets)] = [float(b.maintenance_margin_rate) for b in brackets]
            amounts[row, : len(brackets)] = [float(b.maintenance_amount) for b in brackets]
        index = {symbol: row for row, symbol in enumerate(symbols)}
        return cls(tuple(symbols), floors, rates, amounts, index)

    def marks_array(self, mark_prices: Mapping[str, object]) -> FloatArray:
        """Mark prices in symbol-index order (``nan`` for a symbol without a mark)."""
        return np.array(
            [float(str(mark_prices.get(symbol, "nan"))) for symbol in self.symbols],
            dtype=np.float64,
        )


@dataclass(frozen=True)
class Book:
    """A book of accounts as column arrays (see the module docstring for the layout)."""

    symbol: Int32Array
    quantity: FloatArray
    entry_price: FloatArray
    pool_starts: IntArray
    pool_wallet: FloatArray
    pool_isolated: BoolArray
    pool_account: Int32Array
    group_starts: IntArray
    group_pool: Int32Array

    @property
    def positions(self) -> int:
        return int(self.symbol.shape[0])

    @property
    def pools(self) -> int:
        return int(self.pool_wallet.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the book's arrays."""
        return sum(int(value.nbytes) for value in vars(self).values())

    def copy(self) -> Book:
        """The book with copies of its arrays (for a reader on another thread while this one
        is written in place)."""
        return Book(**{name: array.copy() for name, array in vars(self).items()})


@dataclass
class BatchResult:
    """Per-pool sums, ratios and statuses; per-row liquidation prices (``nan``: none)."""

    upnl: FloatArray
    maintenance_margin: FloatArray
    margin_ratio: FloatArray
    status: npt.NDArray[np.int8]
    uncertain: BoolArray
    liquidation_price: FloatArray
    mark_tier: npt.NDArray[np.uint8]  # per row: its tier at the mark (the next call's first guess)
    price_tier_hint: npt.NDArray[np.uint8]  # per row: its tier at the last liquidation price

    @classmethod
    def allocate(cls, book: Book) -> BatchResult:
        """Buffers for ``book``, allocated once and reused on every evaluation."""
        pools, rows = book.pools, book.positions
        return cls(
            upnl=np.zeros(pools),
            maintenance_margin=np.zeros(pools),
            margin_ratio=np.zeros(pools),
            status=np.zeros(pools, dtype=np.int8),
            uncertain=np.zeros(pools, dtype=np.bool_),
            liquidation_price=np.zeros(rows),
            mark_tier=np.zeros(rows, dtype=np.uint8),
            price_tier_hint=np.zeros(rows, dtype=np.uint8),
        )


def evaluate_ratios(
    book: Book,
    brackets: BracketArrays,
    marks: FloatArray,
    thresholds: Thresholds,
    out: BatchResult,
    pools: IntArray | None = None,
    watched: Sequence[Decimal] = (),
) -> None:
    """Margin ratios and statuses into ``out``: of every pool, or of ``pools`` only (the
    others keep theirs; each listed pool gets exactly the figures of a full pass). A pool near
    a ``watched`` ratio (a level a caller decides on, besides the statuses') is uncertain too."""
    status_levels = (
        thresholds.warning_ratio, thresholds.margin_call_ratio, thresholds.liquidation_ratio
    )  # fmt: skip
    levels = np.array([*status_levels, *watched], dtype=np.float64)
    if pools is None:
        kernels.evaluate_pools(marks, *_ratio_arguments(book, brackets, levels, out))
    else:
        kernels.evaluate_listed_pools(pools, marks, *_ratio_arguments(book, brackets, levels, out))


def _ratio_arguments(
    book: Book, brackets: BracketArrays, levels: FloatArray, out: BatchResult
) -> tuple[Any, ...]:
    """The book's, the tables' and the buffers' arrays, in ``kernels.evaluate_pools`` order."""
    return (
        book.symbol,
        book.quantity,
        book.entry_price,
        book.pool_starts,
        book.pool_wallet,
        brackets.floors,
        brackets.rates,
        brackets.amounts,
        levels,
        UNCERTAINTY_BAND,
        out.mark_tier,
        out.upnl,
        out.maintenance_margin,
        out.margin_ratio,
        out.status,
        out.uncertain,
    )


def evaluate_liquidation_prices(
    book: Book, brackets: BracketArrays, marks: FloatArray, out: BatchResult, venue: Venue
) -> None:
    """Liquidation price of every row into ``out``; needs ``evaluate_ratios`` first."""
    kernels.liquidation_prices(
        marks,
        book.symbol,
        book.quantity,
        book.entry_price,
        book.pool_wallet,
        book.pool_isolated,
        out.upnl,
        out.maintenance_margin,
        book.group_starts,
        book.group_pool,
        brackets.floors,
        brackets.rates,
        brackets.amounts,
        venue is Venue.BYBIT,
        out.mark_tier,
        out.price_tier_hint,
        out.liquidation_price,
    )


def evaluate(
    book: Book,
    brackets: BracketArrays,
    marks: FloatArray,
    thresholds: Thresholds,
    venue: Venue = Venue.BINANCE,
    out: BatchResult | None = None,
) -> BatchResult:
    """Ratios, statuses and liquidation prices of the whole book."""
    result = out if out is not None else BatchResult.allocate(book)
    evaluate_ratios(book, brackets, marks, thresholds, result)
    evaluate_liquidation_prices(book, brackets, marks, result, venue)
    return result


@dataclass(frozen=True)
class Columns:
    """Positions as parallel columns in any order, with their accounts' cross wallets."""

    account: IntArray  # account number of each position, 0 .. len(cross_wallet) - 1
    isolated: BoolArray
    symbol: Int32Array
    quantity: FloatArray
    entry_price: FloatArray
    isolated_wallet: FloatArray  # read for isolated positions only
    cross_wallet: FloatArray  # one per account


def book_from_columns(columns: Columns) -> tuple[Book, IntArray]:
    """Lay columns out as a ``Book``; also return ``order``: book row ``r`` is input ``order[r]``.

    Vectorised (no per-position Python), so a worker can lay out millions of positions.
    """
    order = np.argsort(layout_key(columns), kind="stable")
    account, isolated = columns.account[order], columns.isolated[order]
    symbol = columns.symbol[order]
    accounts = columns.cross_wallet.shape[0]
    isolated_count = np.bincount(account[isolated], minlength=accounts)
    rows_count = np.bincount(account, minlength=accounts)
    pool_base = _exclusive_cumsum(1 + isolated_count)
    account_first = _exclusive_cumsum(rows_count)
    rank = np.arange(order.shape[0]) - account_first[account]
    cross_count = rows_count - isolated_count
    pool = np.where(
        isolated, pool_base[account] + 1 + rank - cross_count[account], pool_base[account]
    )
    pools = int(pool_base[-1] + 1 + isolated_count[-1]) if accounts else 0
    isolated_rows = np.flatnonzero(isolated)
    pool_starts = np.empty(pools + 1, dtype=np.int64)
    pool_starts[pool_base], pool_starts[pool[isolated_rows]] = account_first, isolated_rows
    pool_starts[-1] = order.shape[0]
    pool_wallet = np.empty(pools)
    pool_wallet[pool_base] = columns.cross_wallet
    pool_wallet[pool[isolated_rows]] = columns.isolated_wallet[order][isolated_rows]
    pool_isolated = np.zeros(pools, dtype=np.bool_)
    pool_isolated[pool[isolated_rows]] = True
    new_group = np.ones(order.shape[0], dtype=np.bool_)
    new_group[1:] = isolated[1:] | (account[1:] != account[:-1]) | (symbol[1:] != symbol[:-1])
    group_first = np.flatnonzero(new_group)
    book = Book(
        symbol=symbol.astype(np.int32),
        quantity=columns.quantity[order],
        entry_price=columns.entry_price[order],
        pool_starts=pool_starts,
        pool_wallet=pool_wallet,
        pool_isolated=pool_isolated,
        pool_account=np.repeat(np.arange(accounts, dtype=np.int32), 1 + isolated_count),
        group_starts=np.append(group_first, order.shape[0]).astype(np.int64),
        group_pool=pool[group_first].astype(np.int32),
    )
    return book, order


SYMBOL_BITS = 16


def layout_key(columns: Columns) -> IntArray:
    """One int64 per row ordering rows by account, then cross before isolated, then symbol:
    a stable sort of it is ``np.lexsort((symbol, isolated, account))`` at a tenth of the cost
    (one radix/timsort pass over nearly sorted keys instead of three)."""
    if columns.symbol.size and int(columns.symbol.max()) >= 1 << SYMBOL_BITS:
        raise ValueError(f"at most {1 << SYMBOL_BITS} symbols")
    return (
        (columns.account.astype(np.int64) << (SYMBOL_BITS + 1))
        | (columns.isolated.astype(np.int64) << SYMBOL_BITS)
        | columns.symbol.astype(np.int64)
    )


def _exclusive_cumsum(counts: IntArray) -> IntArray:
    total = np.zeros(counts.shape[0], dtype=np.int64)
    np.cumsum(counts[:-1], out=total[1:])
    return total


@dataclass(frozen=True)
class BookIndex:
    """Where each account landed: its cross pool, and ``rows[a][k]`` for its position ``k``."""

    account_ids: tuple[str, ...]
    cross_pool: IntArray
    rows: tuple[tuple[int, ...], ...]


def position_columns(
    numbered: Sequence[tuple[int, Account]], brackets: BracketArrays, cross_wallet: FloatArray
) -> Columns:
    """Columns of the positions of ``(account number, account)`` pairs, in input order."""
    rows = [(number, p) for number, account in numbered for p in account.positions]
    return Columns(
        account=np.array([number for number, _ in rows], dtype=np.int64),
        isolated=np.array([p.is_isolated for _, p in rows], dtype=np.bool_),
        symbol=np.array([brackets.index[p.symbol] for _, p in rows], dtype=np.int32),
        quantity=np.array([float(p.quantity) for _, p in rows]),
        entry_price=np.array([float(p.entry_price) for _, p in rows]),
        isolated_wallet=np.array([float(p.isolated_wallet or 0) for _, p in rows]),
        cross_wallet=cross_wallet,
    )


def columns_of(accounts: Sequence[Account], brackets: BracketArrays) -> Columns:
    """Columns of domain accounts (numbered in order), positions in input order."""
    wallets = np.array([float(account.cross_wallet_balance) for account in accounts])
    return position_columns(list(enumerate(accounts)), brackets, wallets)


def build_book(accounts: Sequence[Account], brackets: BracketArrays) -> tuple[Book, BookIndex]:
    """Lay domain accounts out as a ``Book``, and say where each account and position went."""
    book, order = book_from_columns(columns_of(accounts, brackets))
    row_of_input = np.empty_like(order)
    row_of_input[order] = np.arange(order.shape[0])
    rows, first = [], 0
    for account in accounts:
        count = len(account.positions)
        rows.append(tuple(int(row) for row in row_of_input[first : first + count]))
        first += count
    cross_pool = np.flatnonzero(~book.pool_isolated)
    return book, BookIndex(tuple(a.account_id for a in accounts), cross_pool, tuple(rows))


def row_pool(book: Book) -> IntArray:
    """Pool of every row (the inverse of ``pool_starts``)."""
    sizes = np.diff(book.pool_starts)
    return np.repeat(np.arange(book.pools, dtype=np.int64), sizes)

"""The batch path: a whole book of positions as column arrays, screened in one pass.

Layout (one row per position, float64 money, no Python objects on the hot path):

* rows are ordered by account; inside an account the cross legs come first, ordered by
  symbol, then each isolated position;
* a *pool* (an account's cross pool, or one isolated position) is a contiguous row range
  ``pool_starts[p]:pool_starts[p + 1]``; every account has exactly one cross pool, possibly
  empty;
* a *group* (the legs sharing one liquidation price: the cross legs of one symbol, or one
  isolated position) is a contiguous range ``group_starts[g]:group_starts[g + 1]``.

Floats screen; the exact path decides. A pool whose status could flip under float rounding is
flagged ``uncertain`` (see ``kernels.evaluate_pools``), and callers confirm candidates exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from marginwatch.engine import kernels
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Account, MarginMode, Position, Thresholds, Venue

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

# Relative band of float uncertainty around each threshold (see kernels.evaluate_pools).
UNCERTAINTY_BAND = 1e-12


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
        """Pad every table to the longest; ``floors`` past a table's end are ``inf``."""
        depth = max(len(tables[symbol].brackets) for symbol in symbols)
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


@dataclass
class BatchResult:
    """Per-pool sums, ratios and statuses; per-row liquidation prices (``nan``: none)."""

    upnl: FloatArray
    maintenance_margin: FloatArray
    margin_ratio: FloatArray
    status: npt.NDArray[np.int8]
    uncertain: BoolArray
    liquidation_price: FloatArray

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
        )


def evaluate_ratios(
    book: Book, brackets: BracketArrays, marks: FloatArray, thresholds: Thresholds, out: BatchResult
) -> None:
    """Margin ratios and statuses of every pool into ``out``."""
    levels = np.array(
        [thresholds.warning_ratio, thresholds.margin_call_ratio, thresholds.liquidation_ratio],
        dtype=np.float64,
    )
    kernels.evaluate_pools(
        marks,
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
class BookIndex:
    """Where each account's positions landed: ``rows[a][k]`` is the row of position ``k``."""

    account_ids: tuple[str, ...]
    cross_pool: tuple[int, ...]
    rows: tuple[tuple[int, ...], ...]


def book_rows(account: Account) -> list[int]:
    """Order of an account's positions in the book: cross legs by symbol, then isolated."""
    order = range(len(account.positions))
    cross = sorted(
        (k for k in order if not account.positions[k].is_isolated),
        key=lambda k: account.positions[k].symbol,
    )
    return cross + [k for k in order if account.positions[k].is_isolated]


class _BookBuilder:
    """Accumulates rows, pools and groups in book order."""

    def __init__(self, symbol_index: Mapping[str, int]) -> None:
        self.symbol_index = symbol_index
        self.rows: list[tuple[int, float, float]] = []
        self.pool_starts: list[int] = []
        self.pool_wallet: list[float] = []
        self.pool_isolated: list[bool] = []
        self.pool_account: list[int] = []
        self.group_starts: list[int] = []
        self.group_pool: list[int] = []

    def open_pool(self, account: int, wallet: float, isolated: bool) -> int:
        self.pool_starts.append(len(self.rows))
        self.pool_wallet.append(wallet)
        self.pool_isolated.append(isolated)
        self.pool_account.append(account)
        return len(self.pool_wallet) - 1

    def add_row(self, position: Position, pool: int, new_group: bool) -> int:
        if new_group:
            self.group_starts.append(len(self.rows))
            self.group_pool.append(pool)
        symbol = self.symbol_index[position.symbol]
        self.rows.append((symbol, float(position.quantity), float(position.entry_price)))
        return len(self.rows) - 1

    def add_account(self, number: int, account: Account) -> tuple[int, tuple[int, ...]]:
        cross_pool = self.open_pool(number, float(account.cross_wallet_balance), False)
        placed: dict[int, int] = {}
        previous_symbol = None
        for k in book_rows(account):
            position = account.positions[k]
            if position.margin_mode is MarginMode.ISOLATED:
                pool = self.open_pool(number, float(position.isolated_wallet or 0), True)
                placed[k] = self.add_row(position, pool, new_group=True)
            else:
                new_group = position.symbol != previous_symbol
                placed[k] = self.add_row(position, cross_pool, new_group)
                previous_symbol = position.symbol
        return cross_pool, tuple(placed[k] for k in range(len(account.positions)))

    def build(self) -> Book:
        rows = np.array(self.rows, dtype=np.float64).reshape(-1, 3)
        return Book(
            symbol=rows[:, 0].astype(np.int32),
            quantity=np.ascontiguousarray(rows[:, 1]),
            entry_price=np.ascontiguousarray(rows[:, 2]),
            pool_starts=np.array([*self.pool_starts, len(self.rows)], dtype=np.int64),
            pool_wallet=np.array(self.pool_wallet, dtype=np.float64),
            pool_isolated=np.array(self.pool_isolated, dtype=np.bool_),
            pool_account=np.array(self.pool_account, dtype=np.int32),
            group_starts=np.array([*self.group_starts, len(self.rows)], dtype=np.int64),
            group_pool=np.array(self.group_pool, dtype=np.int32),
        )


def build_book(accounts: Sequence[Account], brackets: BracketArrays) -> tuple[Book, BookIndex]:
    """Lay accounts out as a ``Book``, and say where each account and position went."""
    builder = _BookBuilder(brackets.index)
    placements = [builder.add_account(number, account) for number, account in enumerate(accounts)]
    index = BookIndex(
        account_ids=tuple(account.account_id for account in accounts),
        cross_pool=tuple(pool for pool, _ in placements),
        rows=tuple(rows for _, rows in placements),
    )
    return builder.build(), index


def row_pool(book: Book) -> IntArray:
    """Pool of every row (the inverse of ``pool_starts``)."""
    sizes = np.diff(book.pool_starts)
    return np.repeat(np.arange(book.pools, dtype=np.int64), sizes)

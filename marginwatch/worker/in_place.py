"""Changed accounts written into the rows they already have, without laying the book out again.

Most changes keep an account's shape: a deposit changes a wallet, a fill a quantity and an entry
price, a liquidation closes positions. Each row has a *slot* (isolated or cross, symbol, side);
when every position of the account's new state has a slot among its rows, the new figures are
written there, and a row whose position is gone gets quantity 0 (a closed row: it adds nothing
to its pool, and a pool holding only closed rows is empty; see ``kernels``). The account's pools
are then evaluated and decided again at the next evaluation. A change that needs a new slot (a
position on a symbol or side the account did not hold) lays the book out again, which also drops
the closed rows; so does a book whose closed rows pass ``CLOSED_ROWS_RELAYOUT_SHARE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from marginwatch.engine import batch
from marginwatch.state.account_rows import AccountRows, Row

CLOSED_ROWS_RELAYOUT_SHARE = 0.1
Slot = tuple[bool, int, int]  # isolated, symbol index, side index


@dataclass(frozen=True, slots=True)
class RowWrite:
    """New figures for one row (``pool`` is its pool, for an isolated wallet)."""

    row: int
    pool: int
    quantity: float
    entry_price: float
    isolated_wallet: float | None


@dataclass
class InPlace:
    """What writing a chunk in place changes: rows, wallets, the accounts' pools."""

    closed_rows: list[int]
    writes: list[RowWrite]
    cross_wallets: list[tuple[int, float]]  # (cross pool, wallet)
    pools: list[range]


def plan_in_place(
    book: batch.Book,
    row_side: npt.NDArray[np.int8],
    cross_pools: npt.NDArray[np.int64],
    chunk: AccountRows,
    numbers: npt.NDArray[np.int64],
) -> InPlace | None:
    """The writes of the chunk's accounts into their rows; ``None`` when one does not fit
    (a new account, or a position without a slot)."""
    if numbers.size and int(numbers.max()) >= cross_pools.shape[0]:
        return None  # a new account: a new layout
    plan = InPlace([], [], [], [])
    by_account = _rows_by_account(chunk)
    for local, number in enumerate(numbers.tolist()):
        pools = range(int(cross_pools[number]), _stop_pool(book, cross_pools, number))
        slots = _slots(book, row_side, pools)
        rows = by_account.get(local, [])
        if any((row[1], row[2], row[6]) not in slots for row in rows):
            return None
        _plan_account(plan, slots, rows, pools, chunk.cross_wallet[local])
    return plan


def apply_in_place(book: batch.Book, plan: InPlace) -> None:
    """Write a plan's figures into the book's arrays."""
    book.quantity[plan.closed_rows] = 0.0
    for write in plan.writes:
        book.quantity[write.row] = write.quantity
        book.entry_price[write.row] = write.entry_price
        if write.isolated_wallet is not None:
            book.pool_wallet[write.pool] = write.isolated_wallet
    for pool, wallet in plan.cross_wallets:
        book.pool_wallet[pool] = wallet


def _plan_account(
    plan: InPlace, slots: dict[Slot, tuple[int, int]], rows: list[Row], pools: range, wallet: float
) -> None:
    held = {(row[1], row[2], row[6]): row for row in rows}
    for slot, (row_index, pool) in slots.items():
        new = held.get(slot)
        if new is None:
            plan.closed_rows.append(row_index)
        else:
            isolated_wallet = new[5] if new[1] else None
            plan.writes.append(RowWrite(row_index, pool, new[3], new[4], isolated_wallet))
    plan.cross_wallets.append((pools.start, wallet))
    plan.pools.append(pools)


def _rows_by_account(chunk: AccountRows) -> dict[int, list[Row]]:
    grouped: dict[int, list[Row]] = {}
    for row in chunk.rows:
        grouped.setdefault(row[0], []).append(row)
    return grouped


def _stop_pool(book: batch.Book, cross_pools: npt.NDArray[np.int64], number: int) -> int:
    """The first pool after account ``number``'s (its pools are contiguous, cross first)."""
    return int(cross_pools[number + 1]) if number + 1 < cross_pools.shape[0] else book.pools


def _slots(
    book: batch.Book, row_side: npt.NDArray[np.int8], pools: range
) -> dict[Slot, tuple[int, int]]:
    """Each row of ``pools`` by its slot: (row, pool)."""
    slots: dict[Slot, tuple[int, int]] = {}
    for pool in pools:
        isolated = bool(book.pool_isolated[pool])
        for row in range(int(book.pool_starts[pool]), int(book.pool_starts[pool + 1])):
            slots[(isolated, int(book.symbol[row]), int(row_side[row]))] = (row, pool)
    return slots

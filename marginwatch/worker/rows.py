"""A partition book's rows as columns: a chunk of read accounts, a layout's rows, and the
pools of one layout found in another by their stable codes (``partition``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from marginwatch.engine import batch
from marginwatch.state.account_rows import AccountRows


def lookup_codes(
    old_codes: npt.NDArray[np.int64], new_codes: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """For each new code: whether the old layout had it, and at which old index."""
    ranked = np.argsort(old_codes)
    position = np.clip(np.searchsorted(old_codes, new_codes, sorter=ranked), 0, old_codes.size - 1)
    where = ranked[position]
    return old_codes[where] == new_codes, where


def chunk_columns(
    chunk: AccountRows, numbers: npt.NDArray[np.int64] | list[int], wallets: batch.FloatArray
) -> batch.Columns:
    """A chunk's rows as columns (account numbers from ``numbers``); its cross wallets are
    written into ``wallets``."""
    numbers = np.asarray(numbers, dtype=np.int64)
    wallets[numbers] = chunk.cross_wallet
    return batch.Columns(
        account=numbers[chunk.column(0, np.int64)],
        isolated=chunk.column(1, np.bool_),
        symbol=chunk.column(2, np.int32),
        quantity=chunk.column(3, np.float64),
        entry_price=chunk.column(4, np.float64),
        isolated_wallet=chunk.column(5, np.float64),
        cross_wallet=wallets,
    )


def row_codes(chunk: AccountRows, brackets: batch.BracketArrays) -> npt.NDArray[np.int64]:
    """Each row's isolated code within its account (0: a cross leg)."""
    isolated = chunk.column(1, np.bool_)
    code = 1 + 3 * chunk.column(2, np.int64) + chunk.column(6, np.int64)
    return np.where(isolated, code, 0)


def concatenate_columns(
    old: batch.Columns, keep: npt.NDArray[np.bool_], fresh: list[batch.Columns],
    wallets: batch.FloatArray,
) -> batch.Columns:  # fmt: skip
    def join(name: str) -> Any:
        return np.concatenate([getattr(old, name)[keep], *(getattr(f, name) for f in fresh)])

    return batch.Columns(
        account=join("account"),
        isolated=join("isolated"),
        symbol=join("symbol"),
        quantity=join("quantity"),
        entry_price=join("entry_price"),
        isolated_wallet=join("isolated_wallet"),
        cross_wallet=wallets,
    )

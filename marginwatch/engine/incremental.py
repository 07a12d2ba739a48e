"""Incremental evaluation: which pools a set of changed marks moves.

A pool's figures depend on its rows and on the marks of their symbols only. Between two
evaluations of an unchanged layout, a pool none of whose symbols ticked has the figures it had;
the pools holding a symbol that ticked are evaluated again by ``batch.evaluate_ratios(...,
pools=...)``, which gives each of them exactly the full pass's figures (same rows, same order of
summation). There is no drift to correct: the full pass a caller still runs at an interval is a
guard, not a repair. The work per tick grows with the pools holding the ticked symbols (their
rows), not with the book.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marginwatch.engine.batch import Book, BoolArray, FloatArray, Int32Array, IntArray


@dataclass(frozen=True)
class SymbolPools:
    """For each symbol ``s``, the pools holding it: ``pools[starts[s]:starts[s + 1]]``,
    ascending."""

    starts: IntArray
    pools: Int32Array
    pool_count: int

    @classmethod
    def of(cls, book: Book, symbols: int) -> SymbolPools:
        """From the book's groups: a group is one (pool, symbol) pair, and no pair repeats."""
        group_symbol = book.symbol[book.group_starts[:-1]]
        order = np.argsort(group_symbol.astype(np.uint16), kind="stable")  # radix sort
        starts = np.zeros(symbols + 1, dtype=np.int64)
        np.cumsum(np.bincount(group_symbol, minlength=symbols), out=starts[1:])
        return cls(starts, book.group_pool[order], book.pools)

    @property
    def nbytes(self) -> int:
        return int(self.starts.nbytes + self.pools.nbytes)

    def pools_of(self, symbols: IntArray, also: BoolArray | None = None) -> IntArray:
        """The pools holding any of ``symbols`` (and those ``also`` marks), ascending, each
        once: marked in a mask over the pools (a sort of the lists would cost more as soon as
        a few symbols tick together)."""
        parts = [self.pools[self.starts[s] : self.starts[s + 1]] for s in symbols]
        if also is None and len(parts) <= 1:
            return parts[0].astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
        mask = np.zeros(self.pool_count, dtype=np.bool_) if also is None else also.copy()
        for part in parts:
            mask[part] = True
        return np.flatnonzero(mask)


def changed_symbols(marks: FloatArray, previous: FloatArray) -> IntArray:
    """Symbols whose mark differs from ``previous`` (a mark appearing or going away counts)."""
    same = (marks == previous) | (np.isnan(marks) & np.isnan(previous))
    return np.flatnonzero(~same)

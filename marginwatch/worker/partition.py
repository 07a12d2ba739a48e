"""A partition's book in memory: its accounts as the engine's column arrays, kept current by
version, with no Python object per account or position.

Loaded once at start, in chunks of ``LOAD_CHUNK`` accounts, parsed straight into rows
(``state.account_rows``); afterwards only the accounts named on the partition's change stream
are read again (when their version is newer than the one held). Their rows are replaced and the
book is laid out again with vectorised code, so a change costs array work, not a Python pass
over every position. What the book keeps per account is its id, its number and its version; an
account that needs exact work (a candidate's confirmation) is read from Redis when it does.

Each pool has a stable integer identity, ``account number × stride + code`` (code 0: the cross
pool; ``1 + 3 × symbol index + side index``: an isolated position), so per-pool memory (last
confirmed status, margin-call episode) follows its pool across layouts.

Incremental evaluation (``engine.incremental``): the book remembers the marks its figures are
at, and which pools must be looked at again whatever the marks (``dirty``: their memory was
reset). ``pools_to_evaluate`` lists the pools holding a symbol whose mark changed, plus the
dirty ones; after a layout change, and every ``FULL_PASS_INTERVAL_SECONDS``, every pool.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from marginwatch.base import keys
from marginwatch.base.pools import CROSS_POOL, SIDES, isolated_pool_name
from marginwatch.engine import batch
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.incremental import SymbolPools, changed_symbols
from marginwatch.engine.types import PositionSide
from marginwatch.state.account_rows import AccountRows, read_account_rows
from marginwatch.state.accounts import (
    changes_trimmed_after,
    iterate_changes,
    partition_account_ids,
)
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.episodes import open_episodes
from marginwatch.state.prices import TickCache
from marginwatch.worker.in_place import (
    CLOSED_ROWS_RELAYOUT_SHARE,
    InPlace,
    apply_in_place,
    plan_in_place,
)
from marginwatch.worker.rows import chunk_columns, concatenate_columns, lookup_codes, row_codes

log = logging.getLogger("marginwatch.worker")

UNKNOWN_STATUS = -1
TRIM_CHECK_INTERVAL_SECONDS = 1.0
FULL_PASS_INTERVAL_SECONDS = 10.0
LOAD_CHUNK = 50_000
CODES_LOOKED_UP_ONE_BY_ONE = 2_000  # past this, one isin over every pool costs less

PoolKey = tuple[str, str]  # (account id, pool name)


@dataclass
class PartitionBook:
    """The accounts of one partition, as held by the worker that evaluates it."""

    partition: int
    brackets: batch.BracketArrays
    tables: Mapping[str, BracketTable]
    last_change_id: str = "0"
    ids: list[str] = field(default_factory=list)  # account number -> id
    numbers: dict[str, int] = field(default_factory=dict)  # id -> account number
    versions: npt.NDArray[np.int64] = field(init=False)  # per account number
    book: batch.Book = field(init=False)
    result: batch.BatchResult = field(init=False)
    symbol_pools: SymbolPools = field(init=False)
    row_side: npt.NDArray[np.int8] = field(init=False)  # per row: its side (``SIDES`` index)
    cross_pools: npt.NDArray[np.int64] = field(init=False)  # per account number
    closed_rows: int = field(default=0, init=False)  # rows of closed positions, kept in place
    pool_codes: npt.NDArray[np.int64] = field(init=False)
    confirmed_status: npt.NDArray[np.int8] = field(init=False)
    in_episode: npt.NDArray[np.bool_] = field(init=False)
    dirty: npt.NDArray[np.bool_] = field(init=False)  # per pool: evaluate it next time
    evaluated_marks: batch.FloatArray = field(init=False)  # the marks ``result`` is at
    full_pass_due: bool = field(default=True, init=False)
    full_pass_at: float = field(default=-math.inf, init=False)  # monotonic seconds
    riskiest_written_at: float = field(default=-math.inf, init=False)  # monotonic seconds
    trim_checked_at: float = field(default=-math.inf, init=False)  # monotonic seconds
    recently_decided: set[int] = field(default_factory=set, init=False)  # pool codes
    bad: BadRecords = field(default_factory=BadRecords)
    ticks: TickCache = field(init=False)

    def __post_init__(self) -> None:
        self.ticks = TickCache(self.bad)
        self.versions = np.zeros(0, dtype=np.int64)
        self.evaluated_marks = np.full(len(self.brackets.symbols), np.nan)
        empty = chunk_columns(AccountRows(), [], np.zeros(0))
        none = np.zeros(0, np.int64)
        self._lay_out(empty, none, np.zeros(0, np.int8), none)

    @property
    def code_stride(self) -> int:
        return 1 + 3 * len(self.brackets.symbols)

    @property
    def nbytes(self) -> int:
        """Memory held by the book's arrays (ids and their numbers not counted)."""
        arrays = (self.versions, self.pool_codes, self.confirmed_status, self.in_episode,
                  self.dirty, self.evaluated_marks, self.row_side, self.cross_pools)  # fmt: skip
        result = sum(int(value.nbytes) for value in vars(self.result).values())
        return self.book.nbytes + result + self.symbol_pools.nbytes + sum(a.nbytes for a in arrays)

    def load(self, client: redis.Redis) -> None:
        """Read every account of the partition, in chunks (changes before the read are
        already in it), and which of its pools are in a margin-call episode."""
        newest: list[Any] = client.xrevrange(  # type: ignore[assignment]
            keys.partition_changes(self.partition), count=1
        )
        last_change_id = newest[0][0].decode() if newest else "0"
        ids = partition_account_ids(client, self.partition)
        chunks = [
            read_account_rows(client, self.partition, ids[start : start + LOAD_CHUNK],
                              self.brackets.index, self.bad)
            for start in range(0, len(ids), LOAD_CHUNK)
        ]  # fmt: skip
        self.replace(chunks)
        self.restore_episodes(open_episodes(client, self.partition))
        self.last_change_id = last_change_id  # only once all of it was read

    def restore_episodes(self, members: Iterable[tuple[str, str]]) -> None:
        """Mark the pools of ``members`` (account id, pool) as in an episode."""
        codes = [self.pool_code(account_id, pool) for account_id, pool in members]
        known = np.array([code for code in codes if code is not None], dtype=np.int64)
        self.in_episode |= np.isin(self.pool_codes, known)

    def pool_code(self, account_id: str, pool: str) -> int | None:
        """The stable identity of a pool by name (``None``: not in this book)."""
        number = self.numbers.get(account_id)
        if number is None:
            return None
        if pool == CROSS_POOL:
            return number * self.code_stride
        _kind, symbol, side = pool.split(":")
        index = self.brackets.index.get(symbol)
        if index is None or side not in {s.value for s in SIDES}:
            return None
        return number * self.code_stride + _code_within(index, PositionSide(side))

    def pools_mask(self, codes: Iterable[int | None]) -> npt.NDArray[np.bool_]:
        """Per pool of this layout: whether its code is among ``codes`` (``None`` and codes
        not in the book are ignored). A few codes are each looked up among their account's
        pools only (the cost grows with the codes, not the book); many, with one ``isin``."""
        known = [code for code in codes if code is not None]
        if len(known) > CODES_LOOKED_UP_ONE_BY_ONE:
            return np.isin(self.pool_codes, np.array(known, dtype=np.int64))
        mask = np.zeros(self.book.pools, dtype=np.bool_)
        for code in known:
            pools = self._account_pools(code // self.code_stride)
            mask[pools.start + np.flatnonzero(self.pool_codes[pools] == code)] = True
        return mask

    def _account_pools(self, number: int) -> range:
        """The pools of account ``number`` in this layout (empty if it has none)."""
        accounts = self.cross_pools.shape[0]
        if not 0 <= number < accounts:
            return range(0)
        stop = int(self.cross_pools[number + 1]) if number + 1 < accounts else self.book.pools
        return range(int(self.cross_pools[number]), stop)

    def version_of(self, account_id: str) -> int | None:
        """The version of the account the book holds (``None``: not in this book)."""
        number = self.numbers.get(account_id)
        return None if number is None else int(self.versions[number])

    def refresh(self, client: redis.Redis) -> int:
        """Read the accounts changed since the last refresh; lay out again if any is newer.
        If the change stream was trimmed past what this book read, every account is read again
        (changes may have been missed); that is looked at most once per
        ``TRIM_CHECK_INTERVAL_SECONDS``, off the per-tick path."""
        if self._trimmed_past_us(client):
            log.warning("partition %d: change stream trimmed past %s; reloading every account",
                        self.partition, self.last_change_id)  # fmt: skip
            self.load(client)
            return len(self.ids)
        changed, last_change_id = self._read_changes(client)
        if changed:
            ids = sorted(changed)
            self.replace([read_account_rows(client, self.partition, ids, self.brackets.index,
                                            self.bad)])  # fmt: skip
        self.last_change_id = last_change_id  # only once the changed accounts were read
        return len(changed)

    def _read_changes(self, client: redis.Redis) -> tuple[set[str], str]:
        """Accounts named on the change stream with a newer version than the book's, and the
        id of the last entry read."""
        changed: set[str] = set()
        last_change_id = self.last_change_id
        for entry_id, account_id, version in iterate_changes(
            client, self.partition, last_change_id
        ):
            last_change_id = entry_id
            held = self.version_of(account_id)
            if held is None or held < version:
                changed.add(account_id)
        return changed, last_change_id

    def _trimmed_past_us(self, client: redis.Redis) -> bool:
        now = time.monotonic()
        if now - self.trim_checked_at < TRIM_CHECK_INTERVAL_SECONDS:
            return False
        self.trim_checked_at = now
        return changes_trimmed_after(client, self.partition, self.last_change_id)

    def replace(self, chunks: list[AccountRows]) -> None:
        """Put these accounts' current state in place of what the book held for them: into
        their rows when they fit (``in_place``), else by laying the book out again."""
        numbered = [self._number(chunk) for chunk in chunks]
        self._grow_versions()
        for chunk, numbers in zip(chunks, numbered, strict=True):
            self.versions[numbers] = chunk.versions
        plans = [plan_in_place(self.book, self.row_side, self.cross_pools, chunk, numbers)
                 for chunk, numbers in zip(chunks, numbered, strict=True)]  # fmt: skip
        ready = [plan for plan in plans if plan is not None]
        if len(ready) == len(plans) and self._few_closed_rows(ready):
            for plan in ready:
                self._write_in_place(plan)
        else:
            self._relay_out(chunks, numbered)

    def _few_closed_rows(self, plans: list[InPlace]) -> bool:
        closed = self.closed_rows + sum(len(plan.closed_rows) for plan in plans)
        return closed <= CLOSED_ROWS_RELAYOUT_SHARE * max(self.book.positions, 1)

    def _write_in_place(self, plan: InPlace) -> None:
        """Write a plan's figures; its accounts' pools are decided again (a pool left empty
        is out of its episode: the change's writer ended it, ``state.episodes``)."""
        apply_in_place(self.book, plan)
        self.closed_rows += len(plan.closed_rows)
        starts, quantity = self.book.pool_starts, self.book.quantity
        for pools in plan.pools:
            self.reconsider(np.arange(pools.start, pools.stop))
            for pool in pools:
                if not quantity[starts[pool] : starts[pool + 1]].any():
                    self.in_episode[pool] = False

    def _relay_out(self, chunks: list[AccountRows], numbered: list[npt.NDArray[np.int64]]) -> None:
        changed = np.concatenate([np.zeros(0, np.int64), *numbered])
        current, current_codes, current_sides = self._current_columns()
        keep = ~np.isin(current.account, changed) & (current.quantity != 0.0)
        wallets = np.zeros(len(self.ids))
        wallets[: current.cross_wallet.shape[0]] = current.cross_wallet
        fresh = [
            chunk_columns(chunk, numbers, wallets)
            for chunk, numbers in zip(chunks, numbered, strict=True)
        ]
        codes = [row_codes(chunk, self.brackets) for chunk in chunks]
        sides = [chunk.column(6, np.int8) for chunk in chunks]
        columns = concatenate_columns(current, keep, fresh, wallets)
        self._lay_out(columns, np.concatenate([current_codes[keep], *codes]),
                      np.concatenate([current_sides[keep], *sides]), changed)  # fmt: skip

    def _number(self, chunk: AccountRows) -> npt.NDArray[np.int64]:
        """The account numbers of a chunk's accounts (new ones numbered in order)."""
        for account_id in chunk.account_ids:
            if account_id not in self.numbers:
                self.numbers[account_id] = len(self.ids)
                self.ids.append(account_id)
        return np.array([self.numbers[a] for a in chunk.account_ids], dtype=np.int64)

    def _grow_versions(self) -> None:
        grown = np.zeros(len(self.ids), dtype=np.int64)
        grown[: self.versions.shape[0]] = self.versions
        self.versions = grown

    def _current_columns(
        self,
    ) -> tuple[batch.Columns, npt.NDArray[np.int64], npt.NDArray[np.int8]]:
        """The book's rows as columns (in layout order), with their isolated codes and
        sides."""
        book = self.book
        pool = batch.row_pool(book)
        isolated = book.pool_isolated[pool]
        columns = batch.Columns(
            account=book.pool_account[pool].astype(np.int64),
            isolated=isolated,
            symbol=book.symbol,
            quantity=book.quantity,
            entry_price=book.entry_price,
            isolated_wallet=np.where(isolated, book.pool_wallet[pool], 0.0),
            cross_wallet=book.pool_wallet[~book.pool_isolated],
        )
        return columns, self.pool_codes[pool] % self.code_stride, self.row_side

    def _lay_out(
        self, columns: batch.Columns, row_code: npt.NDArray[np.int64],
        row_side: npt.NDArray[np.int8], changed: npt.NDArray[np.int64],
    ) -> None:  # fmt: skip
        """Lay the columns out as a book; carry per-pool memory over by pool identity; every
        pool is evaluated at the next evaluation."""
        old_codes = getattr(self, "pool_codes", np.zeros(0, np.int64))
        old_status = getattr(self, "confirmed_status", np.zeros(0, np.int8))
        old_episode = getattr(self, "in_episode", np.zeros(0, np.bool_))
        self.book, order = batch.book_from_columns(columns)
        self.row_side = row_side[order]
        self.cross_pools = np.flatnonzero(~self.book.pool_isolated)
        self.closed_rows = 0
        self.result = batch.BatchResult.allocate(self.book)
        self.symbol_pools = SymbolPools.of(self.book, len(self.brackets.symbols))
        self.pool_codes = self.book.pool_account.astype(np.int64) * self.code_stride
        isolated = self.book.pool_isolated
        self.pool_codes[isolated] += row_code[order[self.book.pool_starts[:-1][isolated]]]
        self.confirmed_status = np.full(self.book.pools, UNKNOWN_STATUS, dtype=np.int8)
        self.in_episode = np.zeros(self.book.pools, dtype=np.bool_)
        self.dirty = np.zeros(self.book.pools, dtype=np.bool_)
        self.full_pass_due = True
        if old_codes.size:
            found, where = lookup_codes(old_codes, self.pool_codes)
            self.confirmed_status[found] = old_status[where[found]]
            self.in_episode[found] = old_episode[where[found]]
        if changed.size:
            touched = np.isin(self.book.pool_account, changed)
            self.confirmed_status[touched] = UNKNOWN_STATUS
        self.in_episode &= np.diff(self.book.pool_starts) > 0  # an empty pool's episode ended

    def pools_to_evaluate(self, marks: batch.FloatArray) -> npt.NDArray[np.int64] | None:
        """The pools the next evaluation at ``marks`` must evaluate (``None``: every pool)."""
        if self.full_pass_due or time.monotonic() - self.full_pass_at >= FULL_PASS_INTERVAL_SECONDS:
            return None
        changed = changed_symbols(marks, self.evaluated_marks)
        return self.symbol_pools.pools_of(changed, self.dirty if self.dirty.any() else None)

    def evaluated(self, marks: batch.FloatArray, pools: npt.NDArray[np.int64] | None) -> None:
        """``result`` is at ``marks`` now; the pools evaluated stay to be evaluated again until
        ``settled`` (an evaluation that fails before is repeated in full for them)."""
        self.evaluated_marks = marks.copy()
        if pools is None:
            self.full_pass_due = True
        else:
            self.dirty[pools] = True

    def settled(self, pools: npt.NDArray[np.int64] | None) -> None:
        """The evaluation of ``pools`` (``None``: a full pass) is finished."""
        if pools is None:
            self.full_pass_due = False
            self.full_pass_at = time.monotonic()
            self.dirty[:] = False
        else:
            self.dirty[pools] = False

    def reconsider(self, pools: npt.NDArray[np.int64]) -> None:
        """Forget what was confirmed for ``pools``: the next evaluation confirms them again."""
        self.confirmed_status[pools] = UNKNOWN_STATUS
        self.dirty[pools] = True

    def pool_key(self, pool: int) -> PoolKey:
        """(account id, pool name) of a pool of the current layout."""
        code = int(self.pool_codes[pool])
        account_id = self.ids[code // self.code_stride]
        within = code % self.code_stride
        if within == 0:
            return account_id, CROSS_POOL
        symbol = self.brackets.symbols[(within - 1) // 3]
        return account_id, isolated_pool_name(symbol, SIDES[(within - 1) % 3])


def _code_within(symbol_index: int, side: PositionSide) -> int:
    """An isolated pool's code within its account: ``1 + 3 × symbol index + side index``."""
    return 1 + 3 * symbol_index + SIDES.index(side)

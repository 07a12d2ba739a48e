"""A partition's book in memory: its accounts as the engine's arrays, kept current by version.

Loaded once at start; afterwards only the accounts named on the partition's change stream are
read again (when their version is newer than the one held). Their rows are replaced in the
column arrays and the book is laid out again with vectorised code, so a change costs array work,
not a Python pass over every position.

Each pool has a stable integer identity, ``account number × stride + code`` (code 0: the cross
pool; ``1 + 3 × symbol index + side index``: an isolated position), so per-pool memory (last
confirmed status, margin-call episode) follows its pool across layouts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from marginwatch.base import keys
from marginwatch.base.pools import CROSS_POOL, isolated_pool_name
from marginwatch.engine import batch
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Account, Position, PositionSide
from marginwatch.state.accounts import (
    StoredAccount,
    changes_trimmed_after,
    iterate_changes,
    partition_account_ids,
    read_accounts,
)
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.episodes import open_episodes
from marginwatch.state.prices import TickCache

log = logging.getLogger("marginwatch.worker")

UNKNOWN_STATUS = -1
TRIM_CHECK_INTERVAL_SECONDS = 1.0
SIDES = (PositionSide.BOTH, PositionSide.LONG, PositionSide.SHORT)

PoolKey = tuple[str, str]  # (account id, pool name)


@dataclass
class PartitionBook:
    """The accounts of one partition, as held by the worker that evaluates it."""

    partition: int
    brackets: batch.BracketArrays
    tables: Mapping[str, BracketTable]
    accounts: dict[str, StoredAccount] = field(default_factory=dict)
    last_change_id: str = "0"
    ids: list[str] = field(default_factory=list)  # account number -> id
    numbers: dict[str, int] = field(default_factory=dict)  # id -> account number
    columns: batch.Columns = field(init=False)
    row_code: npt.NDArray[np.int64] = field(init=False)  # per column row: its isolated code
    book: batch.Book = field(init=False)
    result: batch.BatchResult = field(init=False)
    pool_codes: npt.NDArray[np.int64] = field(init=False)
    confirmed_status: npt.NDArray[np.int8] = field(init=False)
    in_episode: npt.NDArray[np.bool_] = field(init=False)
    riskiest_written_at: float = field(default=-math.inf, init=False)  # monotonic seconds
    trim_checked_at: float = field(default=-math.inf, init=False)  # monotonic seconds
    recently_decided: set[int] = field(default_factory=set, init=False)  # pool codes
    bad: BadRecords = field(default_factory=BadRecords)
    ticks: TickCache = field(init=False)

    def __post_init__(self) -> None:
        self.ticks = TickCache(self.bad)
        self.columns, self.row_code = _rows([], self.brackets)
        self._lay_out(set())

    @property
    def code_stride(self) -> int:
        return 1 + 3 * len(self.brackets.symbols)

    def load(self, client: redis.Redis) -> None:
        """Read every account of the partition (changes before the read are already in it)
        and which of its pools are in a margin-call episode."""
        newest: list[Any] = client.xrevrange(  # type: ignore[assignment]
            keys.partition_changes(self.partition), count=1
        )
        last_change_id = newest[0][0].decode() if newest else "0"
        ids = partition_account_ids(client, self.partition)
        self.replace(read_accounts(client, self.partition, ids, self.bad))
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

    def refresh(self, client: redis.Redis) -> int:
        """Read the accounts changed since the last refresh; lay out again if any is newer.
        If the change stream was trimmed past what this book read, every account is read again
        (changes may have been missed); that is looked at most once per
        ``TRIM_CHECK_INTERVAL_SECONDS``, off the per-tick path."""
        if self._trimmed_past_us(client):
            log.warning("partition %d: change stream trimmed past %s; reloading every account",
                        self.partition, self.last_change_id)  # fmt: skip
            self.load(client)
            return len(self.accounts)
        changed: set[str] = set()
        last_change_id = self.last_change_id
        for entry_id, account_id, version in iterate_changes(
            client, self.partition, last_change_id
        ):
            last_change_id = entry_id
            held = self.accounts.get(account_id)
            if held is None or held.version < version:
                changed.add(account_id)
        if changed:
            self.replace(read_accounts(client, self.partition, sorted(changed), self.bad))
        self.last_change_id = last_change_id  # only once the changed accounts were read
        return len(changed)

    def _trimmed_past_us(self, client: redis.Redis) -> bool:
        now = time.monotonic()
        if now - self.trim_checked_at < TRIM_CHECK_INTERVAL_SECONDS:
            return False
        self.trim_checked_at = now
        return changes_trimmed_after(client, self.partition, self.last_change_id)

    def replace(self, updated: Mapping[str, StoredAccount]) -> None:
        """Put these accounts' current state in place of what the book held for them."""
        for account_id in updated:
            if account_id not in self.numbers:
                self.numbers[account_id] = len(self.ids)
                self.ids.append(account_id)
        self.accounts.update(updated)
        changed = np.array([self.numbers[a] for a in updated], dtype=np.int64)
        new_rows = [(self.numbers[a], stored.account) for a, stored in updated.items()]
        self._swap_rows(changed, new_rows)
        self._lay_out(set(changed.tolist()))

    def _swap_rows(
        self, changed: npt.NDArray[np.int64], new_rows: list[tuple[int, Account]]
    ) -> None:
        keep = ~np.isin(self.columns.account, changed)
        fresh, fresh_code = _rows(new_rows, self.brackets)
        wallets = np.zeros(len(self.ids))
        wallets[: self.columns.cross_wallet.shape[0]] = self.columns.cross_wallet
        wallets[[n for n, _ in new_rows]] = [float(a.cross_wallet_balance) for _, a in new_rows]
        self.columns = _concatenate(self.columns, keep, fresh, wallets)
        self.row_code = np.concatenate([self.row_code[keep], fresh_code])

    def _lay_out(self, changed_numbers: set[int]) -> None:
        """Lay the columns out as a book; carry per-pool memory over by pool identity."""
        old_codes = getattr(self, "pool_codes", np.zeros(0, np.int64))
        old_status = getattr(self, "confirmed_status", np.zeros(0, np.int8))
        old_episode = getattr(self, "in_episode", np.zeros(0, np.bool_))
        self.book, order = batch.book_from_columns(self.columns)
        self.result = batch.BatchResult.allocate(self.book)
        self.pool_codes = self.book.pool_account.astype(np.int64) * self.code_stride
        isolated = self.book.pool_isolated
        self.pool_codes[isolated] += self.row_code[order[self.book.pool_starts[:-1][isolated]]]
        self.confirmed_status = np.full(self.book.pools, UNKNOWN_STATUS, dtype=np.int8)
        self.in_episode = np.zeros(self.book.pools, dtype=np.bool_)
        if old_codes.size:
            found, where = _lookup(old_codes, self.pool_codes)
            self.confirmed_status[found] = old_status[where[found]]
            self.in_episode[found] = old_episode[where[found]]
        if changed_numbers:
            touched = np.isin(self.book.pool_account, list(changed_numbers))
            self.confirmed_status[touched] = UNKNOWN_STATUS

    def pool_key(self, pool: int) -> PoolKey:
        """(account id, pool name) of a pool of the current layout."""
        code = int(self.pool_codes[pool])
        account_id = self.ids[code // self.code_stride]
        within = code % self.code_stride
        if within == 0:
            return account_id, CROSS_POOL
        symbol = self.brackets.symbols[(within - 1) // 3]
        return account_id, isolated_pool_name(symbol, SIDES[(within - 1) % 3])

    def account_of_pool(self, pool: int) -> StoredAccount:
        return self.accounts[self.pool_key(pool)[0]]


def _lookup(
    old_codes: npt.NDArray[np.int64], new_codes: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """For each new code: whether the old layout had it, and at which old index."""
    ranked = np.argsort(old_codes)
    position = np.clip(np.searchsorted(old_codes, new_codes, sorter=ranked), 0, old_codes.size - 1)
    where = ranked[position]
    return old_codes[where] == new_codes, where


def _rows(
    accounts: Sequence[tuple[int, Account]], brackets: batch.BracketArrays
) -> tuple[batch.Columns, npt.NDArray[np.int64]]:
    """Column rows of the given (account number, account) pairs, with their isolated codes."""
    columns = batch.position_columns(accounts, brackets, np.zeros(0))
    codes = [
        _isolated_code(p, brackets) if p.is_isolated else 0
        for _, account in accounts
        for p in account.positions
    ]
    return columns, np.array(codes, dtype=np.int64)


def _isolated_code(position: Position, brackets: batch.BracketArrays) -> int:
    return _code_within(brackets.index[position.symbol], position.position_side)


def _code_within(symbol_index: int, side: PositionSide) -> int:
    """An isolated pool's code within its account: ``1 + 3 × symbol index + side index``."""
    return 1 + 3 * symbol_index + SIDES.index(side)


def _concatenate(
    old: batch.Columns, keep: npt.NDArray[np.bool_], fresh: batch.Columns,
    wallets: npt.NDArray[np.float64],
) -> batch.Columns:  # fmt: skip
    def join(name: str) -> Any:
        return np.concatenate([getattr(old, name)[keep], getattr(fresh, name)])

    return batch.Columns(
        account=join("account"),
        isolated=join("isolated"),
        symbol=join("symbol"),
        quantity=join("quantity"),
        entry_price=join("entry_price"),
        isolated_wallet=join("isolated_wallet"),
        cross_wallet=wallets,
    )

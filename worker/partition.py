"""A partition's book in memory: its accounts as the engine's arrays, kept current by version.

Loaded once at start; afterwards only the accounts named on the partition's change stream are
read again (when their version is newer than the one held), and the arrays are rebuilt.
Per-pool memory (last confirmed status, margin-call episode) survives rebuilds by pool key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from marginwatch import keys
from marginwatch.engine import batch
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Account, Position
from marginwatch.state.accounts import (
    StoredAccount,
    iterate_changes,
    partition_account_ids,
    read_accounts,
)

CROSS_POOL = "cross"
UNKNOWN_STATUS = -1


def isolated_pool(position: Position) -> str:
    """Pool name of an isolated position: ``isolated:SYMBOL:SIDE``."""
    return f"isolated:{position.symbol}:{position.position_side.value}"


PoolKey = tuple[str, str]  # (account id, pool name)


@dataclass
class PartitionBook:
    """The accounts of one partition, as held by the worker that evaluates it."""

    partition: int
    brackets: batch.BracketArrays
    tables: Mapping[str, BracketTable]
    accounts: dict[str, StoredAccount] = field(default_factory=dict)
    last_change_id: str = "0"
    book: batch.Book = field(init=False)
    result: batch.BatchResult = field(init=False)
    pool_keys: list[PoolKey] = field(default_factory=list)
    confirmed_status: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, np.int8))
    in_episode: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))

    def __post_init__(self) -> None:
        self.rebuild()

    def load(self, client: redis.Redis) -> None:
        """Read every account of the partition (changes before the read are already in it)."""
        newest: list[Any] = client.xrevrange(  # type: ignore[assignment]
            keys.partition_changes(self.partition), count=1
        )
        self.last_change_id = newest[0][0].decode() if newest else "0"
        ids = partition_account_ids(client, self.partition)
        self.accounts = read_accounts(client, ids)
        self.rebuild()

    def refresh(self, client: redis.Redis) -> int:
        """Read the accounts changed since the last refresh; rebuild if any is newer."""
        changed: dict[str, int] = {}
        for entry_id, account_id, version in iterate_changes(
            client, self.partition, self.last_change_id
        ):
            self.last_change_id = entry_id
            held = self.accounts.get(account_id)
            if held is None or held.version < version:
                changed[account_id] = version
        if not changed:
            return 0
        self.accounts.update(read_accounts(client, sorted(changed)))
        self.rebuild(set(changed))
        return len(changed)

    def rebuild(self, changed: set[str] | None = None) -> None:
        """Lay the accounts out again, carrying per-pool memory over by pool key.

        A changed account keeps its margin-call episodes but its pools' statuses are confirmed
        again (a deposit may have rescued it, or a fill put it at risk).
        """
        previous = {
            key: (UNKNOWN_STATUS if key[0] in (changed or ()) else status, episode)
            for key, status, episode in zip(
                self.pool_keys, self.confirmed_status, self.in_episode, strict=True
            )
        }
        accounts = [stored.account for stored in self.accounts.values()]
        self.book, index = batch.build_book(accounts, self.brackets)
        self.result = batch.BatchResult.allocate(self.book)
        self.pool_keys = _pool_keys(accounts, self.book, index)
        memory = [previous.get(key, (UNKNOWN_STATUS, False)) for key in self.pool_keys]
        self.confirmed_status = np.array([status for status, _ in memory], dtype=np.int8)
        self.in_episode = np.array([episode for _, episode in memory], dtype=np.bool_)

    def account_of_pool(self, pool: int) -> StoredAccount:
        return self.accounts[self.pool_keys[pool][0]]


def _pool_keys(accounts: list[Account], book: batch.Book, index: batch.BookIndex) -> list[PoolKey]:
    pool_of_row = batch.row_pool(book)
    names: list[PoolKey] = [("", "")] * book.pools
    for number, account in enumerate(accounts):
        names[int(index.cross_pool[number])] = (account.account_id, CROSS_POOL)
        for k, position in enumerate(account.positions):
            if position.is_isolated:
                pool = int(pool_of_row[index.rows[number][k]])
                names[pool] = (account.account_id, isolated_pool(position))
    return names

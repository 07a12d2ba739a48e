"""The whole live book, read for a stress run: every partition's accounts as the batch path's
columns, each partition as of one moment, and the insurance fund.

A partition is read in three steps:

1. its members and the newest entry of its change stream, in one transaction;
2. the members' states, in pipelined chunks of ``READ_CHUNK`` (as ``account_rows`` reads them);
3. catching up: every write of an account appends to its partition's change stream in the same
   script or transaction, so the accounts changed since step 1 are the ones the stream names
   after that entry. They are read again in one transaction with the stream's entries after
   the newest seen and the partition's ledger; when that transaction finds no change to an
   account it did not read, every state held is the partition's state at that moment (and so
   is the ledger). Otherwise the accounts newly named are read the same way, at most
   ``CATCH_UP_ROUNDS`` times.

Partitions are read one after another: the book is consistent within each partition, not
across partitions (one read per partition). The stored states are kept beside the rows: a pool
confirmed exactly is confirmed on the state its rows came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import redis

from marginwatch.base import keys
from marginwatch.base.settings import ConfigurationError
from marginwatch.engine.batch import Columns
from marginwatch.engine.types import Account
from marginwatch.state.account_rows import AccountRows, add_account
from marginwatch.state.accounts import (
    READ_CHUNK,
    PartitionCountMismatchError,
    account_from_json,
    changes_trimmed_after,
)
from marginwatch.state.bad_records import BadRecords

CATCH_UP_ROUNDS = 20
NO_ENTRY = "0-0"  # the stream id before any entry
States = dict[str, tuple[bytes | None, bytes]]  # account id -> (version, state) as stored


@dataclass
class LiveBook:
    """Every partition's accounts (numbered in read order) as the batch path's columns, one
    part per partition, with their stored states and the insurance fund (the sum of the
    ledgers read with them). No Python object per position outlives its partition's read."""

    account_ids: list[str] = field(default_factory=list)  # per account number
    states: list[bytes] = field(default_factory=list)  # per account number
    parts: list[Columns] = field(default_factory=list)  # per partition
    fund: Decimal = Decimal(0)

    def account(self, number: int) -> Account:
        """Account ``number`` as a domain account, from the state its rows came from."""
        return account_from_json(self.states[number])

    def columns(self) -> Columns:
        """Every part's columns, joined (account by account, in read order)."""

        def join(name: str) -> Any:
            return np.concatenate([getattr(part, name) for part in self.parts] or [np.zeros(0)])

        kinds = {"account": np.int64, "isolated": np.bool_, "symbol": np.int32}
        joined = {name: join(name).astype(kinds.get(name, np.float64)) for name in _COLUMNS}
        return Columns(**joined)


_COLUMNS = ("account", "isolated", "symbol", "quantity", "entry_price", "isolated_wallet",
            "cross_wallet")  # fmt: skip


def rows_columns(rows: AccountRows, first: int) -> Columns:
    """A partition's rows as columns, its accounts numbered from ``first``."""
    return Columns(
        account=rows.column(0, np.int64) + first,
        isolated=rows.column(1, np.bool_),
        symbol=rows.column(2, np.int32),
        quantity=rows.column(3, np.float64),
        entry_price=rows.column(4, np.float64),
        isolated_wallet=rows.column(5, np.float64),
        cross_wallet=np.array(rows.cross_wallet, dtype=np.float64),
    )


def check_partition_count(client: redis.Redis, partitions: int) -> None:
    """The deployment's recorded partition count is ``partitions`` (read, never written)."""
    recorded = client.get(keys.PARTITION_COUNT)
    if recorded is None:
        raise ConfigurationError(f"{keys.PARTITION_COUNT} is not set: no accounts in this Redis")
    if int(recorded) != partitions:
        raise PartitionCountMismatchError(
            f"this deployment has {int(recorded)} partitions (recorded in Redis at "
            f"{keys.PARTITION_COUNT}); configured: {partitions}"
        )


def read_live_book(
    client: redis.Redis,
    partitions: int,
    symbol_index: Mapping[str, int],
    on_partition: Callable[[int], None] | None = None,
    bad: BadRecords | None = None,
) -> LiveBook:
    """Every partition read consistently (``read_partition``), one after another;
    ``on_partition`` is told each partition once it is read."""
    found = LiveBook()
    for partition in range(partitions):
        states, ledger = read_partition(client, partition)
        add_states(found, states, symbol_index, bad)
        found.fund += ledger
        if on_partition is not None:
            on_partition(partition)
    return found


def read_partition(client: redis.Redis, partition: int) -> tuple[States, Decimal]:
    """The partition's accounts and ledger as of one moment (the module docstring's steps)."""
    after, members = begin_read(client, partition)
    states = read_states(client, partition, members)
    ledger = catch_up(client, partition, after, states)
    if changes_trimmed_after(client, partition, after):
        raise ConfigurationError(
            f"partition {partition}: its change stream was trimmed past the read's start "
            "(more changes during the read than it keeps); run again"
        )
    return states, ledger


def begin_read(client: redis.Redis, partition: int) -> tuple[str, list[str]]:
    """The id of the newest change-stream entry and the partition's members, together."""
    pipe = client.pipeline(transaction=True)
    pipe.xrevrange(keys.partition_changes(partition), count=1)
    pipe.smembers(keys.partition_members(partition))
    newest, members = pipe.execute()
    after = newest[0][0].decode() if newest else NO_ENTRY
    return after, sorted(member.decode() for member in members)


def read_states(client: redis.Redis, partition: int, account_ids: Sequence[str]) -> States:
    """The stored version and state of each account, pipelined ``READ_CHUNK`` at a time
    (absent ones left out)."""
    states: States = {}
    for start in range(0, len(account_ids), READ_CHUNK):
        chunk = account_ids[start : start + READ_CHUNK]
        pipe = client.pipeline(transaction=False)
        for account_id in chunk:
            pipe.hmget(keys.account(partition, account_id), ["version", "state"])
        keep(states, chunk, pipe.execute())
    return states


def keep(states: States, account_ids: Sequence[str], replies: Sequence[Any]) -> None:
    """Hold each account's reply (``[version, state]``); an account without a state is gone."""
    for account_id, (version, state) in zip(account_ids, replies, strict=True):
        if state is None:
            states.pop(account_id, None)
        else:
            states[account_id] = (version, state)


def catch_up(client: redis.Redis, partition: int, after: str, states: States) -> Decimal:
    """Read again the accounts changed since entry ``after`` until one transaction finds no
    change to an account it did not read; the partition's ledger as of that transaction."""
    stale: list[str] = []
    for _ in range(CATCH_UP_ROUNDS):
        replies, entries, ledger = catch_up_round(client, partition, stale, after)
        keep(states, stale, replies)
        after = entries[-1][0].decode() if entries else after
        stale = sorted({fields[b"account"].decode() for _id, fields in entries} - set(stale))
        if not stale:
            return Decimal(ledger.decode()) if ledger else Decimal(0)
    raise ConfigurationError(
        f"partition {partition}: still changing after {CATCH_UP_ROUNDS} reads; run again"
    )


def catch_up_round(
    client: redis.Redis, partition: int, account_ids: Sequence[str], after: str
) -> tuple[list[Any], list[Any], bytes | None]:
    """In one transaction: the accounts' ``[version, state]``, the change-stream entries after
    ``after``, and the partition's ledger."""
    pipe = client.pipeline(transaction=True)
    for account_id in account_ids:
        pipe.hmget(keys.account(partition, account_id), ["version", "state"])
    pipe.xrange(keys.partition_changes(partition), min=f"({after}", max="+")
    pipe.get(keys.insurance_fund(partition))
    *replies, entries, ledger = pipe.execute()
    return replies, entries, ledger


def add_states(
    found: LiveBook, states: States, symbol_index: Mapping[str, int], bad: BadRecords | None
) -> None:
    """Add a partition's accounts: their rows (by ``account_rows.add_account``; corrupt ones
    reported and left out) as one part of columns, and the state of each account taken."""
    rows = AccountRows()
    for account_id in sorted(states):
        version, state = states[account_id]
        before = len(rows)
        add_account(rows, account_id, version, state, symbol_index, bad)
        if len(rows) > before:
            found.states.append(state)
    found.parts.append(rows_columns(rows, len(found.account_ids)))
    found.account_ids += rows.account_ids

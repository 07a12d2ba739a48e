"""Accounts in Redis: versioned per account, partitioned, changed atomically.

Each account is a hash ``keys.account(partition, id)`` (its partition by
``marginwatch.base.partitions.partition_of``) with ``version`` (bumped by every accepted change)
and ``state`` (the account as the snapshot contract's JSON). A change writes the account, adds
it to its partition's members and appends ``{account, version}`` to the partition's change
stream in one transaction, guarded by ``WATCH`` on the account: concurrent writers retry, so no
change is lost or applied on a stale version. A load (``store_states``) replaces many accounts
of one partition in one script call, each exactly as a single write would (its version bumped
in the script, a change-stream entry of its own), so a writer watching one of them retries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.account_lines import CHUNK_LINES, chunked
from marginwatch.base.partitions import partition_of
from marginwatch.base.settings import ConfigurationError
from marginwatch.base.snapshot import AccountModel
from marginwatch.engine.types import Account
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.connection import queue_script
from marginwatch.state.streams import id_order

CHANGES_MAXLEN = 1_000_000
READ_CHUNK = 2_000
# Accounts ``store_accounts`` stores together (one pipeline), and at most per script call.
STORE_CHUNK = CHUNK_LINES
STORE_SCRIPT_ACCOUNTS = 250

T = TypeVar("T")
# An account id and its state JSON, as stored.
State = tuple[str, str | bytes]


class PartitionCountMismatchError(ConfigurationError):
    """This deployment records another partition count than the one configured."""


def ensure_partition_count(client: redis.Redis, partitions: int) -> int:
    """Record P on first use; refuse a different P afterwards."""
    client.set(keys.PARTITION_COUNT, partitions, nx=True)
    recorded = int(client.get(keys.PARTITION_COUNT) or 0)
    if recorded != partitions:
        raise PartitionCountMismatchError(
            f"this deployment has {recorded} partitions (recorded in Redis at "
            f"{keys.PARTITION_COUNT}); configured: {partitions}"
        )
    return recorded


def account_to_json(account: Account) -> str:
    """The account in the snapshot contract's JSON (numbers as decimal strings)."""
    return AccountModel.model_validate(
        {
            "account_id": account.account_id,
            "position_mode": account.position_mode,
            "cross_wallet_balance": account.cross_wallet_balance,
            "positions": [
                {
                    "symbol": p.symbol,
                    "position_side": p.position_side,
                    "quantity": p.quantity,
                    "entry_price": p.entry_price,
                    "leverage": p.leverage,
                    "margin_mode": p.margin_mode,
                    "isolated_wallet": p.isolated_wallet,
                }
                for p in account.positions
            ],
        }
    ).model_dump_json(exclude_none=True)


def account_from_json(text: str | bytes) -> Account:
    return AccountModel.model_validate_json(text).to_domain()


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """An account as read, with the version it was read at."""

    version: int
    account: Account


def account_key(account_id: str, partitions: int) -> str:
    """The account's hash, under its partition's tag."""
    return keys.account(partition_of(account_id, partitions), account_id)


def read_account(client: redis.Redis, account_id: str, partitions: int) -> StoredAccount | None:
    version, state = client.hmget(account_key(account_id, partitions), ["version", "state"])
    if state is None:
        return None
    return StoredAccount(int(version or 0), account_from_json(state))


def stored_account(
    account_id: str,
    version: bytes | str | None,
    state: bytes | str | None,
    bad: BadRecords | None,
) -> StoredAccount | None:
    """An account hash's fields as read (``None`` when absent; reported when corrupt)."""
    if state is None:
        return None
    try:
        stored = StoredAccount(int(version or 0), account_from_json(state))
    except ValueError as error:  # pydantic's ValidationError included
        (bad or BadRecords()).report("account", account_id, str(error).splitlines()[0])
        return None
    if stored.account.account_id != account_id:
        (bad or BadRecords()).report("account", account_id, "its state names another account")
        return None
    return stored


def read_account_fields(
    client: redis.Redis, partition: int, account_ids: Sequence[str]
) -> Iterator[tuple[str, bytes | None, bytes | None]]:
    """``(id, version, state)`` of each account of one partition, as stored (``None``: absent),
    pipelined ``READ_CHUNK`` at a time."""
    for start in range(0, len(account_ids), READ_CHUNK):
        chunk = account_ids[start : start + READ_CHUNK]
        pipe = client.pipeline(transaction=False)
        for account_id in chunk:
            pipe.hmget(keys.account(partition, account_id), ["version", "state"])
        for account_id, (version, state) in zip(chunk, pipe.execute(), strict=True):
            yield account_id, version, state


def read_accounts(
    client: redis.Redis,
    partition: int,
    account_ids: Sequence[str],
    bad: BadRecords | None = None,
) -> dict[str, StoredAccount]:
    """Several accounts of one partition, pipelined in chunks; absent ones are left out, and so
    are corrupt ones (reported to ``bad``)."""
    found: dict[str, StoredAccount] = {}
    for account_id, version, state in read_account_fields(client, partition, account_ids):
        stored = stored_account(account_id, version, state, bad)
        if stored is not None:
            found[account_id] = stored
    return found


def partition_account_ids(client: redis.Redis, partition: int) -> list[str]:
    members: set[bytes] = client.smembers(keys.partition_members(partition))  # type: ignore[assignment]
    return sorted(member.decode() for member in members)


# Writes an account's new state, bumps its version, records it in its partition and appends the
# change: KEYS = account hash, partition members, partition changes; ARGV = state JSON,
# account id, change-stream max length. Returns the new version.
_WRITE_ACCOUNT = """
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'account', ARGV[2], 'version', version)
return version
"""


def write_account(pipe: Pipeline, account: Account, partitions: int) -> None:
    """Queue the write of ``account`` (its version is bumped by one) on a pipeline."""
    partition = partition_of(account.account_id, partitions)
    script_keys = [
        keys.account(partition, account.account_id),
        keys.partition_members(partition),
        keys.partition_changes(partition),
    ]
    queue_script(pipe, _WRITE_ACCOUNT, script_keys, account_to_json(account), account.account_id,
                 CHANGES_MAXLEN)  # fmt: skip


def record_account_write(
    commands: Pipeline,
    account: Account,
    version: int,
    partitions: int,
) -> None:
    """The commands of ``write_account`` for a caller that knows the new ``version`` (it
    guards the one before): state and version, membership, the change-stream entry."""
    partition = partition_of(account.account_id, partitions)
    key = keys.account(partition, account.account_id)
    commands.hset(key, mapping={"version": version, "state": account_to_json(account)})
    commands.sadd(keys.partition_members(partition), account.account_id)
    commands.xadd(keys.partition_changes(partition),
                  {"account": account.account_id, "version": version},
                  maxlen=CHANGES_MAXLEN, approximate=True)  # fmt: skip


Mutation = Callable[[StoredAccount | None, Pipeline], T]
WatchingMutation = Callable[[StoredAccount | None, Pipeline, dict[str, bytes | None]], T]


def update_account(client: redis.Redis, account_id: str, partitions: int, mutate: Mutation[T]) -> T:
    """Run ``mutate(current, pipe)`` under ``WATCH`` and execute what it queued, atomically.

    ``mutate`` reads nothing from Redis itself (it gets the current account) and queues its
    writes on ``pipe`` (already in ``MULTI``). If the account changed meanwhile, it runs again
    on the new version.
    """
    return update_account_watching(
        client, account_id, partitions, (), lambda current, pipe, _watched: mutate(current, pipe)
    )


def update_account_watching(
    client: redis.Redis,
    account_id: str,
    partitions: int,
    other_keys: Sequence[str],
    mutate: WatchingMutation[T],
    before_attempt: Callable[[], None] | None = None,
) -> T:
    """``update_account``, also watching ``other_keys`` (keys of the account's partition) and
    passing their values to ``mutate``; ``before_attempt`` runs before each attempt (to read
    again what ``mutate`` decides on, e.g. the newest marks)."""
    key = account_key(account_id, partitions)
    with client.pipeline(transaction=True) as pipe:
        while True:
            if before_attempt is not None:
                before_attempt()
            try:
                pipe.watch(key, *other_keys)  # type: ignore[no-untyped-call]
                version, state = pipe.hmget(key, ["version", "state"])
                current = stored_account(account_id, version, state, None)  # corrupt: absent
                watched: dict[str, bytes | None] = {key: pipe.get(key) for key in other_keys}  # type: ignore[misc]
                pipe.multi()
                result = mutate(current, pipe, watched)
                pipe.execute()
                return result
            except redis.WatchError:
                continue


def store_accounts(
    client: redis.Redis, accounts: Iterable[Account], partitions: int, chunk: int = STORE_CHUNK
) -> int:
    """Replace each account's state (``accounts load`` of a snapshot), ``chunk`` accounts at a
    time (``store_states``); returns how many."""
    ensure_partition_count(client, partitions)
    count = 0
    for batch in chunked(accounts, chunk):
        store_states(client, [(a.account_id, account_to_json(a)) for a in batch], partitions)
        count += len(batch)
    return count


# Replaces the state of several accounts of one partition, each as _WRITE_ACCOUNT does (in
# order, an id met twice written twice), with one SADD for all of them:
# KEYS = partition members, partition changes, then the accounts' hashes; ARGV = change-stream
# max length, then each account's id and state JSON. Returns how many.
_STORE_ACCOUNTS = """
local count = #KEYS - 2
local ids = {}
for i = 1, count do
  local id = ARGV[2 * i]
  local version = redis.call('HINCRBY', KEYS[i + 2], 'version', 1)
  redis.call('HSET', KEYS[i + 2], 'state', ARGV[2 * i + 1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'account', id, 'version', version)
  ids[i] = id
end
redis.call('SADD', KEYS[1], unpack(ids))
return count
"""


def store_states(client: redis.Redis, states: Sequence[State], partitions: int) -> None:
    """Store ``(account id, state JSON)`` pairs (valid states, in the snapshot contract's JSON):
    grouped by partition, ``STORE_SCRIPT_ACCOUNTS`` per script call (one hash slot each), all
    calls in one pipeline. An id met twice is stored twice, in order: the later state wins."""
    pipe = client.pipeline(transaction=False)
    for partition, batch in partition_batches(states, partitions):
        script_keys = [keys.partition_members(partition), keys.partition_changes(partition)]
        script_keys += [keys.account(partition, account_id) for account_id, _state in batch]
        arguments = [value for pair in batch for value in pair]
        queue_script(pipe, _STORE_ACCOUNTS, script_keys, CHANGES_MAXLEN, *arguments)
    pipe.execute()


def partition_batches(
    states: Iterable[State], partitions: int
) -> Iterator[tuple[int, list[State]]]:
    """``states`` by partition, in order, cut into script calls' worth."""
    grouped: defaultdict[int, list[State]] = defaultdict(list)
    for state in states:
        grouped[partition_of(state[0], partitions)].append(state)
    for partition, group in grouped.items():
        for start in range(0, len(group), STORE_SCRIPT_ACCOUNTS):
            yield partition, group[start : start + STORE_SCRIPT_ACCOUNTS]


def changes_trimmed_after(client: redis.Redis, partition: int, after: str) -> bool:
    """Whether the partition's change stream was trimmed past ``after`` (its first entry is
    newer): a reader there may have missed changes. Conservative: trimmed exactly up to
    ``after`` counts too, costing the reader one reload."""
    if after in {"0", "0-0"}:
        return False
    try:
        info: dict[str, Any] = client.xinfo_stream(keys.partition_changes(partition))
    except redis.ResponseError:  # no stream: nothing was ever written, nothing missed
        return False
    first: Any = info.get("first-entry")
    return first is not None and id_order(first[0].decode()) > id_order(after)


def iterate_changes(
    client: redis.Redis, partition: int, after: str, block_ms: int | None = None
) -> Iterator[tuple[str, str, int]]:
    """``(stream id, account id, version)`` of the partition's changes after ``after``."""
    reply: list[Any] = client.xread(  # type: ignore[assignment]
        {keys.partition_changes(partition): after}, block=block_ms
    )
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            yield entry_id.decode(), fields[b"account"].decode(), int(fields[b"version"])

"""``marginwatch migrate``: move a deployment's keys from the layout without partition hash tags
to the partition-scoped one, offline (every daemon stopped), losing nothing.

What moves where (P is the recorded partition count; an account's partition is
``partition_of(id, P)``):

* accounts ``mw:account:ID`` -> ``mw:{pN}:account:ID``; partition keys
  ``mw:partition:N:{accounts,changes,status,evaluated}`` -> ``mw:{pN}:…``; pending flags are
  dropped (the first evaluation re-arms them);
* margin-call episodes ``mw:episode:ID:POOL`` (and their member in the partition's set of open
  episodes) and liquidation idempotency keys ``mw:done:liquidation:ID:POOL:VERSION`` -> the
  account's partition, with their TTL;
* event idempotency keys ``mw:done:event:EVENT_ID`` -> the partition of the event's account when
  the old event stream still names it, else into every partition (a resend stays a duplicate);
* the account-event stream: entries not yet applied (pending in the consumer group, or after
  its last delivered id) are appended, in order and with their ids, to their account's
  partition stream (an unreadable one to partition 0's, whose applier dead-letters it); the old
  stream is kept as ``keys.MIGRATED_ACCOUNT_EVENTS`` for audit;
* dead letters, margin-call events and liquidations: each entry to its account's partition
  stream, with its id (ids are times, so merged reading keeps the order);
* the insurance fund ``mw:insurance-fund`` is credited to partition 0's ledger (the fund is the
  sum of the ledgers); prices, the tick sequence and the tick stream move to ``mw:{prices}:…``.

Nothing is overwritten: a target that exists already is reported as a conflict and its source
kept. Running it again moves nothing. It refuses to run while the old action queues hold
messages (let the old executors drain them first).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.pools import pool_member
from marginwatch.state.streams import id_order

SCAN_COUNT = 1_000
RANGE_COUNT = 1_000


class MigrationRefusedError(RuntimeError):
    """The deployment is not in a state that can be migrated; the message says why."""


@dataclass
class MigrationReport:
    """What was moved, by kind; conflicts are targets that existed (their sources kept)."""

    moved: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def count(self, kind: str, number: int = 1) -> None:
        self.moved[kind] = self.moved.get(kind, 0) + number

    def lines(self) -> list[str]:
        moved = [f"{kind}: {number}" for kind, number in sorted(self.moved.items())]
        return moved + [f"conflict (kept): {key}" for key in self.conflicts] or ["nothing to move"]


def migrate(client: redis.Redis, partitions: int) -> MigrationReport:
    """Move every legacy key of this Redis to the partition-scoped layout (see the module)."""
    _refuse_with_queued_actions(client)
    report = MigrationReport()
    _move_prices(client, report)
    owners = _event_owners(client)
    _move_account_events(client, partitions, report)
    for stream, target, kind in (
        (keys.LEGACY_DEAD_LETTERS, keys.dead_letters, "dead letters"),
        (keys.LEGACY_MARGIN_CALL_EVENTS, keys.margin_call_events, "margin-call events"),
        (keys.LEGACY_LIQUIDATIONS, keys.liquidations, "liquidations"),
    ):
        _split_stream(client, stream, target, partitions, report, kind)
    _move_accounts(client, partitions, report)
    _move_partition_keys(client, report)
    _move_episodes(client, partitions, report)
    _move_idempotency(client, partitions, owners, report)
    _move_fund(client, report)
    for key in _scan(client, keys.LEGACY_LOCK_PREFIX + "*"):
        client.delete(key)
    return report


def _refuse_with_queued_actions(client: redis.Redis) -> None:
    queued = {queue: int(client.llen(queue)) for queue in keys.LEGACY_ACTION_QUEUES}
    if any(queued.values()):
        waiting = ", ".join(f"{queue}: {n}" for queue, n in queued.items() if n)
        raise MigrationRefusedError(
            f"old action queues still hold messages ({waiting}); run the old executors until "
            "they are empty, stop every daemon, then migrate"
        )


def _scan(client: redis.Redis, pattern: str) -> Iterator[str]:
    for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        yield key.decode() if isinstance(key, bytes) else str(key)


def _rename(client: redis.Redis, source: str, target: str, report: MigrationReport) -> bool:
    """``RENAMENX`` (the TTL moves with the key); a target that exists is a conflict, a source
    already gone (SCAN may return a key twice) nothing."""
    try:
        if client.renamenx(source, target):
            return True
    except redis.ResponseError as error:
        if "no such key" in str(error).lower():
            return False
        raise
    report.conflicts.append(source)
    return False


def _move_prices(client: redis.Redis, report: MigrationReport) -> None:
    """Prices and the tick stream move; a tick sequence keeps the larger of the two."""
    for source, target in ((keys.LEGACY_PRICES, keys.PRICES), (keys.LEGACY_TICKS, keys.TICKS)):
        if client.exists(source) and _rename(client, source, target, report):
            report.count("price keys")
    old = client.get(keys.LEGACY_TICK_SEQUENCE)
    if old is not None:
        new = client.get(keys.TICK_SEQUENCE)
        client.set(keys.TICK_SEQUENCE, max(int(old), int(new or 0)))
        client.delete(keys.LEGACY_TICK_SEQUENCE)
        report.count("price keys")


def _entries(client: redis.Redis, stream: str, after: str = "-") -> Iterator[tuple[str, Any]]:
    """Every entry of ``stream`` after ``after`` (exclusive unless ``-``), in order."""
    start = after
    while True:
        chunk: list[Any] = client.xrange(stream, min=start, count=RANGE_COUNT)  # type: ignore[assignment]
        for entry_id, fields in chunk:
            yield entry_id.decode(), fields
        if len(chunk) < RANGE_COUNT:
            return
        start = "(" + chunk[-1][0].decode()


def _account_of_event(fields: Any) -> str | None:
    """The account an event entry names, if it can be read."""
    try:
        document = json.loads(fields[b"event"])
    except (KeyError, TypeError, ValueError):
        return None
    account = document.get("account_id") if isinstance(document, dict) else None
    return account if isinstance(account, str) and account else None


def _event_owners(client: redis.Redis) -> dict[str, str]:
    """``event_id -> account`` over the old event stream (for the idempotency keys)."""
    owners: dict[str, str] = {}
    for _id, fields in _entries(client, keys.LEGACY_ACCOUNT_EVENTS):
        account = _account_of_event(fields)
        try:
            event_id = json.loads(fields[b"event"]).get("event_id")
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if account and isinstance(event_id, str):
            owners[event_id] = account
    return owners


def _append(client: redis.Redis, stream: str, entry_id: str, fields: Any) -> None:
    """Append with the same id; after a newer entry already there, with a new one. An entry
    already copied (a migration that stopped half way) is not copied twice."""
    try:
        client.xadd(stream, fields, id=entry_id)
    except redis.ResponseError as error:
        if "equal or smaller" not in str(error):
            raise
        if not client.xrange(stream, min=entry_id, max=entry_id):
            client.xadd(stream, fields)


def _unapplied(client: redis.Redis) -> tuple[set[str], str]:
    """The old group's pending ids and its last delivered id (``0-0`` with no group)."""
    try:
        groups: list[Any] = client.xinfo_groups(keys.LEGACY_ACCOUNT_EVENTS)
    except redis.ResponseError:
        return set(), "0-0"
    group = next((g for g in groups if _text(g["name"]) == keys.ACCOUNT_EVENTS_GROUP), None)
    if group is None:
        return set(), "0-0"
    pending: list[Any] = client.xpending_range(
        keys.LEGACY_ACCOUNT_EVENTS, keys.ACCOUNT_EVENTS_GROUP, "-", "+", 1_000_000_000
    )
    return {_text(p["message_id"]) for p in pending}, _text(group["last-delivered-id"])


def _move_account_events(client: redis.Redis, partitions: int, report: MigrationReport) -> None:
    """Unapplied entries to their partition's stream, in order; the old stream archived."""
    if not client.exists(keys.LEGACY_ACCOUNT_EVENTS):
        return
    pending, last_delivered = _unapplied(client)
    after = id_order(last_delivered)
    for entry_id, fields in _entries(client, keys.LEGACY_ACCOUNT_EVENTS):
        if entry_id in pending or id_order(entry_id) > after:
            account = _account_of_event(fields)
            partition = partition_of(account, partitions) if account else 0
            _append(client, keys.account_events(partition), entry_id, fields)
            report.count("account events not yet applied")
    if _rename(client, keys.LEGACY_ACCOUNT_EVENTS, keys.MIGRATED_ACCOUNT_EVENTS, report):
        report.count("account-event streams archived")


def _split_stream(
    client: redis.Redis,
    stream: str,
    target: Callable[[int], str],
    partitions: int,
    report: MigrationReport,
    kind: str,
) -> None:
    """Each entry of a global output stream to its account's partition stream."""
    for entry_id, fields in _entries(client, stream):
        account = fields.get(b"account_id")
        if account is None:
            account = _account_of_event(fields)
        name = account.decode() if isinstance(account, bytes) else account
        _append(client, target(partition_of(name, partitions) if name else 0), entry_id, fields)
        report.count(kind)
    client.delete(stream)


def _move_accounts(client: redis.Redis, partitions: int, report: MigrationReport) -> None:
    for key in _scan(client, keys.LEGACY_ACCOUNT_PREFIX + "*"):
        account_id = key.removeprefix(keys.LEGACY_ACCOUNT_PREFIX)
        target = keys.account(partition_of(account_id, partitions), account_id)
        if _rename(client, key, target, report):
            report.count("accounts")


def _move_partition_keys(client: redis.Redis, report: MigrationReport) -> None:
    for key in _scan(client, keys.LEGACY_PARTITION_PREFIX + "*"):
        number, _, name = key.removeprefix(keys.LEGACY_PARTITION_PREFIX).partition(":")
        if name == "pending":  # transient: the first evaluation re-arms it
            client.delete(key)
            continue
        if name not in keys.LEGACY_PARTITION_NAMES or not number.isdigit():
            report.conflicts.append(key)
            continue
        target = keys.partition_key(int(number), keys.LEGACY_PARTITION_NAMES[name])
        if _rename(client, key, target, report):
            report.count("partition keys")


def split_pool(text: str) -> tuple[str, str] | None:
    """``ACCOUNT:POOL`` into its parts (an account id may hold colons; a pool is ``cross`` or
    ``isolated:SYMBOL:SIDE``)."""
    if text.endswith(":cross"):
        return text.removesuffix(":cross"), "cross"
    where = text.rfind(":isolated:")
    return (text[:where], text[where + 1 :]) if where > 0 else None


def _move_episodes(client: redis.Redis, partitions: int, report: MigrationReport) -> None:
    for key in _scan(client, keys.LEGACY_EPISODE_PREFIX + "*"):
        parts = split_pool(key.removeprefix(keys.LEGACY_EPISODE_PREFIX))
        if parts is None:
            report.conflicts.append(key)
            continue
        partition = partition_of(parts[0], partitions)
        if _rename(client, key, keys.episode(partition, *parts), report):
            client.sadd(keys.partition_episodes(partition), pool_member(*parts))
            report.count("margin-call episodes")


def _move_idempotency(
    client: redis.Redis, partitions: int, owners: dict[str, str], report: MigrationReport
) -> None:
    for key in _scan(client, keys.LEGACY_IDEMPOTENCY_PREFIX + "*"):
        name = key.removeprefix(keys.LEGACY_IDEMPOTENCY_PREFIX)
        if _left_by_a_skip(client, name, partitions):
            client.delete(key)
            report.count("liquidation keys left by skips (dropped)")
            continue
        homes = _homes_of(name, partitions, owners)
        if homes is None:
            report.conflicts.append(key)
            continue
        _copy_to(client, key, [keys.idempotency(p, name) for p in homes], report)


def _left_by_a_skip(client: redis.Redis, name: str, partitions: int) -> bool:
    """A legacy liquidation key at the account's current version: the layout before wrote it
    for skips too (a liquidation raises the version past it); kept, it would block the pool's
    next liquidation at that version."""
    kind, _, rest = name.partition(":")
    pool_part, _, version = rest.rpartition(":")
    parts = split_pool(pool_part) if kind == "liquidation" else None
    if parts is None or not version.isdigit():
        return False
    account_id = parts[0]
    partition = partition_of(account_id, partitions)
    current = client.hget(keys.account(partition, account_id), "version")
    if current is None:  # not moved yet: the legacy key
        current = client.hget(keys.LEGACY_ACCOUNT_PREFIX + account_id, "version")
    return current is not None and int(current) <= int(version)


def _homes_of(name: str, partitions: int, owners: dict[str, str]) -> list[int] | None:
    """The partitions an idempotency key belongs to (``None``: not a key of marginwatch's)."""
    kind, _, rest = name.partition(":")
    if kind == "liquidation":
        parts = split_pool(rest.rpartition(":")[0])
        return None if parts is None else [partition_of(parts[0], partitions)]
    if kind == "liquidation-skip":
        return None
    if kind == "event":
        owner = owners.get(rest)
        return [partition_of(owner, partitions)] if owner else list(range(partitions))
    return None


def _copy_to(client: redis.Redis, key: str, targets: list[str], report: MigrationReport) -> None:
    """The key's value and TTL to each target (existing targets are conflicts), then gone."""
    value, ttl_ms = client.get(key), int(client.pttl(key))
    for target in targets:
        if not client.set(target, value or b"", px=ttl_ms if ttl_ms > 0 else None, nx=True):
            report.conflicts.append(f"{key} -> {target}")
    client.delete(key)
    report.count("idempotency keys")


def _move_fund(client: redis.Redis, report: MigrationReport) -> None:
    """The old fund is credited to partition 0's ledger, and removed, in one transaction (the
    legacy layout lives on one standalone Redis, so the two keys may be written together)."""
    ledger = keys.insurance_fund(0)
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(keys.LEGACY_INSURANCE_FUND, ledger)  # type: ignore[no-untyped-call]
        old, balance = pipe.get(keys.LEGACY_INSURANCE_FUND), pipe.get(ledger)
        if old is None:
            return
        pipe.multi()
        pipe.set(ledger, str(Decimal(_text(balance or b"0")) + Decimal(_text(old))))
        pipe.delete(keys.LEGACY_INSURANCE_FUND)
        pipe.execute()
    report.count("insurance fund")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

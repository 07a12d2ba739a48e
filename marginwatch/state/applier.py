"""The account-events applier: each partition's stream applied to its accounts, in order.

The trading core appends entries with one field ``event`` (the event JSON, see
``marginwatch.events.models``) to the stream of the account's partition,
``keys.account_events(p)`` (``marginwatch.client.publish_account_event`` does it). For each
partition it serves, the applier holds the partition's lease (``state.lease``: one applier per
partition at a time, with a fencing token), reads the stream through the consumer group
``keys.ACCOUNT_EVENTS_GROUP`` (created at id 0 with MKSTREAM when missing) and, for each entry in
stream order, in one ``WATCH``/``MULTI`` transaction on the account's partition slot (the
account, the entry's idempotency key and the lease are watched):

* accepted: the new account is written (``write_account``: version + 1, an entry on its
  partition's change stream); an event that changes nothing, such as a ``margin_mode_change``
  with no position, writes nothing;
* rejected: the entry goes to ``keys.dead_letters(p)`` with fields ``event`` (the original
  JSON), ``reason`` and ``stream_id``; the account is untouched. An event whose account belongs
  to another partition is rejected so;
* with an ``event_id``: ``keys.idempotency(p, "event:" + event_id)`` is set to ``accepted`` or
  ``rejected`` (TTL 7 days); a later entry with the same id is a duplicate: acknowledged, not
  applied again nor dead-lettered again;
* the entry is acknowledged (``XACK``) in the same transaction, so a crash neither applies an
  entry twice nor loses one; an applier whose lease was taken over writes nothing.

Order: the lease holder handles the partition's entries one by one in stream order, its own
pending entries first. When it takes a lease it claims (``XAUTOCLAIM``) every pending entry of
the partition (delivered to a previous holder that died) and applies those first; so
per-account order holds however many appliers wait for the lease.

Marks are the latest per symbol in ``keys.PRICES``, read once per batch. Bad input never stops
the applier (it is dead-lettered); a Redis error propagates (the daemon restarts it).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.ticks import ticks_from_prices_hash
from marginwatch.engine.brackets import BracketTable
from marginwatch.events.models import AccountEvent, EventRejectedError, parse_event
from marginwatch.events.rules import apply_event, require_account
from marginwatch.state.accounts import StoredAccount, update_account_watching, write_account
from marginwatch.state.episodes import end_vanished_episodes
from marginwatch.state.lease import Lease

log = logging.getLogger("marginwatch.applier")

IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600
DEAD_LETTERS_MAXLEN = 1_000_000
RECLAIM_BATCH = 100
LEASE_TTL_MS = 10_000
IDLE_WAIT_MS = 100

Fields = Mapping[bytes | str, bytes | str]


class Outcome(Enum):
    """What became of one stream entry."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


@dataclass(slots=True)
class AppliedCounts:
    """Entries handled, by outcome (for metrics)."""

    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0

    @property
    def total(self) -> int:
        return self.accepted + self.rejected + self.duplicates

    def record(self, outcome: Outcome) -> None:
        if outcome is Outcome.ACCEPTED:
            self.accepted += 1
        elif outcome is Outcome.REJECTED:
            self.rejected += 1
        else:
            self.duplicates += 1

    def add(self, other: AppliedCounts) -> None:
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.duplicates += other.duplicates


@dataclass(frozen=True, slots=True)
class _Entry:
    """One stream entry and what the applier needs to apply it."""

    stream_id: str
    fields: Fields
    marks: Mapping[str, Decimal]
    tables: Mapping[str, BracketTable]
    partitions: int  # the deployment's partition count
    partition: int  # the stream's
    lease: Lease

    @property
    def original(self) -> str:
        """The ``event`` field as written, else every field as JSON (for the dead letter)."""
        texts = {_text(name): _text(value) for name, value in self.fields.items()}
        return texts["event"] if "event" in texts else json.dumps(texts, sort_keys=True)


class LeaseLostError(RuntimeError):
    """The applier's lease on the partition was taken over; it writes nothing more."""


def ensure_group(client: redis.Redis, partition: int) -> None:
    """Create the partition's consumer group at id 0 (MKSTREAM) unless it exists."""
    try:
        client.xgroup_create(
            keys.account_events(partition), keys.ACCOUNT_EVENTS_GROUP, id="0", mkstream=True
        )
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def reclaim_pending(
    client: redis.Redis, partition: int, consumer: str, min_idle_ms: int = 0
) -> int:
    """``XAUTOCLAIM`` every pending entry idle for ``min_idle_ms`` to ``consumer``; how many."""
    ensure_group(client, partition)
    start: bytes | str = "0-0"
    claimed = 0
    while True:
        reply: list[Any] = client.xautoclaim(
            keys.account_events(partition),
            keys.ACCOUNT_EVENTS_GROUP,
            consumer,
            min_idle_ms,
            start_id=start,
            count=RECLAIM_BATCH,
        )
        claimed += len(reply[1])
        start = reply[0]
        if _text(start) == "0-0":
            return claimed


def read_marks(client: redis.Redis) -> dict[str, Decimal]:
    """The latest mark per symbol from ``keys.PRICES``; an unreadable tick is skipped."""
    raw: dict[bytes, bytes] = client.hgetall(keys.PRICES)  # type: ignore[assignment]
    marks: dict[str, Decimal] = {}
    for symbol, value in raw.items():
        try:
            ticks = ticks_from_prices_hash({symbol: value})
        except (ValueError, KeyError, TypeError, ArithmeticError):
            log.warning("prices: unreadable tick for %r skipped", symbol)
            continue
        marks.update((name, tick.mark_price) for name, tick in ticks.items())
    return marks


def partition_lease(client: redis.Redis, partition: int, owner: str, ttl_ms: int) -> Lease:
    """The applier lease of ``partition`` for ``owner``."""
    return Lease(client, keys.applier_lease(partition), keys.applier_fence(partition), owner,
                 ttl_ms)  # fmt: skip


def apply_pending(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    partitions: int,
    lease: Lease,
    partition: int,
    count: int = 100,
) -> AppliedCounts:
    """One step on one partition whose lease is held: this consumer's pending entries if any,
    else up to ``count`` new ones. Stops early if the lease is lost."""
    entries = _read(client, partition, lease.owner, "0", count)
    if not entries:
        entries = _read_new_fenced(client, partition, lease, count)
    counts = AppliedCounts()
    if not entries:
        return counts
    marks = read_marks(client)
    try:
        for stream_id, fields in entries:
            entry = _Entry(_text(stream_id), fields, marks, tables, partitions, partition, lease)
            counts.record(_apply_entry(client, entry))
    except LeaseLostError:
        log.warning("account events: lease on partition %d lost by %s", partition, lease.owner)
        lease.value = None
    return counts


def run_applier(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    partitions: int,
    served: Sequence[int],
    consumer: str,
    stop: threading.Event,
    *,
    count: int = 100,
    idle_wait_ms: int = IDLE_WAIT_MS,
    lease_ttl_ms: int = LEASE_TTL_MS,
    on_step: Callable[[AppliedCounts], None] | None = None,
    on_round: Callable[[], None] | None = None,
) -> AppliedCounts:
    """Apply the ``served`` partitions' events until ``stop`` is set: each partition whose
    lease this consumer holds (or takes, claiming the partition's pending entries first).
    Leases are released on the way out, so a waiting applier takes over at once.

    ``on_step`` receives each step's counts (for metrics), ``on_round`` is called before each
    step (a heartbeat); the totals are returned.
    """
    leases = {p: partition_lease(client, p, consumer, lease_ttl_ms) for p in served}
    totals = AppliedCounts()
    try:
        while not stop.is_set():
            if on_round is not None:
                on_round()
            step = AppliedCounts()
            for partition, lease in leases.items():
                if _keep(client, partition, lease):
                    step.add(apply_pending(client, tables, partitions, lease, partition, count))
            totals.add(step)
            if on_step is not None and step.total:
                on_step(step)
            if not step.total:
                stop.wait(idle_wait_ms / 1000)
    finally:
        for lease in leases.values():
            lease.release()
    return totals


def _keep(client: redis.Redis, partition: int, lease: Lease) -> bool:
    """Keep (or take) the partition's lease; a newly taken one claims the pending entries. At
    each renewal, entries idle for longer than the lease are claimed too: a holder that lost
    its lease without knowing may have taken some after the takeover (its writes fail)."""
    was_held, renewed_at = lease.held, lease.renewed_at
    if not lease.keep():
        return False
    if not was_held:
        claimed = reclaim_pending(client, partition, lease.owner)
        log.info("account events: %s applies partition %d (lease %d; %d pending claimed)",
                 lease.owner, partition, lease.token, claimed)  # fmt: skip
    elif lease.renewed_at != renewed_at:
        reclaim_pending(client, partition, lease.owner, min_idle_ms=lease.ttl_ms)
    return True


def _read(
    client: redis.Redis, partition: int, consumer: str, start: str, count: int
) -> list[tuple[bytes | str, Fields]]:
    """``XREADGROUP`` from ``start`` (``0``: own pending, ``>``: new); creates a missing group."""
    stream = keys.account_events(partition)
    for attempt in range(2):
        try:
            reply: list[Any] = client.xreadgroup(  # type: ignore[assignment]
                keys.ACCOUNT_EVENTS_GROUP, consumer, {stream: start}, count=count
            )
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error) or attempt:
                raise
            ensure_group(client, partition)
            continue
        return [entry for _stream, entries in reply or [] for entry in entries]
    return []


# KEYS: lease, stream. ARGV: lease value, group, consumer, count. New entries for the
# consumer only while it holds the lease (0 otherwise): an applier that lost its lease
# without knowing cannot take entries after the takeover, which the new holder would then
# apply after later ones.
_READ_NEW_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS',
                  KEYS[2], '>') or {}
"""


def _read_new_fenced(
    client: redis.Redis, partition: int, lease: Lease, count: int
) -> list[tuple[bytes | str, Fields]]:
    """Up to ``count`` new entries, read only if ``lease`` is still held (else it is marked
    lost and nothing is read)."""
    stream = keys.account_events(partition)
    args = (lease.key, stream, lease.value or b"", keys.ACCOUNT_EVENTS_GROUP, lease.owner, count)
    try:
        reply: Any = client.eval(_READ_NEW_FENCED, 2, *args)
    except redis.ResponseError as error:
        if "NOGROUP" not in str(error):
            raise
        ensure_group(client, partition)
        reply = client.eval(_READ_NEW_FENCED, 2, *args)
    if reply == 0:
        log.warning("account events: lease on partition %d lost by %s", partition, lease.owner)
        lease.value = None
        return []
    return [(entry_id, _pairs(flat)) for _stream, entries in reply for entry_id, flat in entries]


def _pairs(flat: list[bytes]) -> Fields:
    """A script's flat field/value list as a mapping."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _apply_entry(client: redis.Redis, entry: _Entry) -> Outcome:
    """Parse, dedup, apply (or dead-letter) and acknowledge one entry."""
    if not entry.fields:
        reason = "event: the entry was deleted from the stream before it was applied"
        return _reject_unparsed(client, entry, reason)
    try:
        event = parse_event(entry.fields)
    except EventRejectedError as error:
        return _reject_unparsed(client, entry, error.reason)
    home = partition_of(event.account_id, entry.partitions)
    if home != entry.partition:
        reason = (f"account_id: {event.account_id} belongs to partition {home}, not to "
                  f"partition {entry.partition} whose stream holds the event")  # fmt: skip
        return _reject_unparsed(client, entry, reason)
    done_key = (
        keys.idempotency(entry.partition, "event:" + event.event_id) if event.event_id else None
    )
    lease_key = entry.lease.key

    def mutate(
        current: StoredAccount | None, pipe: Pipeline, watched: dict[str, bytes | None]
    ) -> Outcome:
        if watched[lease_key] != entry.lease.value:
            raise LeaseLostError(entry.lease.key)
        if done_key is not None and watched[done_key] is not None:
            outcome = Outcome.DUPLICATE
        else:
            outcome = _apply_or_reject(current, event, entry, pipe)
        if done_key is not None and outcome is not Outcome.DUPLICATE:
            pipe.set(done_key, outcome.value, ex=IDEMPOTENCY_TTL_SECONDS)
        _queue_ack(pipe, entry)
        return outcome

    watch = (lease_key,) if done_key is None else (lease_key, done_key)
    return update_account_watching(client, event.account_id, entry.partitions, watch, mutate)


def _apply_or_reject(
    current: StoredAccount | None, event: AccountEvent, entry: _Entry, pipe: Pipeline
) -> Outcome:
    """Queue the account write, or the dead letter, on the transaction."""
    try:
        account = require_account(current.account if current else None)
        updated = apply_event(account, event, entry.marks, entry.tables)
    except EventRejectedError as error:
        _queue_dead_letter(pipe, entry, error.reason)
        return Outcome.REJECTED
    except Exception as error:  # a bug must not stop the stream: dead-letter and log it
        log.exception("account event %s could not be applied", entry.stream_id)
        _queue_dead_letter(pipe, entry, f"event: internal error ({error!r})")
        return Outcome.REJECTED
    if current is not None and updated != account:
        write_account(pipe, updated, entry.partitions)
        end_vanished_episodes(pipe, entry.partition, account, updated)
    return Outcome.ACCEPTED


def _reject_unparsed(client: redis.Redis, entry: _Entry, reason: str) -> Outcome:
    """Dead-letter and acknowledge an entry that names no event of this partition, in one
    transaction checked against the lease."""
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(entry.lease.key)  # type: ignore[no-untyped-call]
                if pipe.get(entry.lease.key) != entry.lease.value:
                    raise LeaseLostError(entry.lease.key)
                pipe.multi()
                _queue_dead_letter(pipe, entry, reason)
                _queue_ack(pipe, entry)
                pipe.execute()
                return Outcome.REJECTED
            except redis.WatchError:
                continue


def _queue_ack(pipe: Pipeline, entry: _Entry) -> None:
    pipe.xack(keys.account_events(entry.partition), keys.ACCOUNT_EVENTS_GROUP, entry.stream_id)


def _queue_dead_letter(pipe: Pipeline, entry: _Entry, reason: str) -> None:
    log.warning("account event %s (partition %d) rejected: %s", entry.stream_id,
                entry.partition, reason)  # fmt: skip
    pipe.xadd(
        keys.dead_letters(entry.partition),
        {"event": entry.original, "reason": reason, "stream_id": entry.stream_id},
        maxlen=DEAD_LETTERS_MAXLEN,
        approximate=True,
    )


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value

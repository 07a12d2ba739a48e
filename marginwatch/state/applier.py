"""The account-events applier: the trading core's stream applied to the stored accounts, in order.

The trading core appends entries with one field ``event`` (the event JSON, see
``marginwatch.events.rules``) to ``keys.ACCOUNT_EVENTS``. The applier reads them through the
consumer group ``keys.ACCOUNT_EVENTS_GROUP`` (created at id 0 with MKSTREAM when missing) and,
for each entry in stream order, in one ``WATCH``/``MULTI`` transaction on the account
(``update_account_watching``, which also watches the entry's idempotency key):

* accepted: the new account is written (``write_account``: version + 1, an entry on its
  partition's change stream); an event that changes nothing, such as a ``margin_mode_change``
  with no position, writes nothing;
* rejected: the entry goes to ``keys.DEAD_LETTERS`` with fields ``event`` (the original JSON),
  ``reason`` and ``stream_id``; the account is untouched;
* with an ``event_id``: ``keys.idempotency("event:" + event_id)`` is set to ``accepted`` or
  ``rejected`` (TTL 7 days); a later entry with the same id is a duplicate: acknowledged, not
  applied again nor dead-lettered again;
* the entry is acknowledged (``XACK``) in the same transaction, so a crash neither applies an
  entry twice nor loses one.

Order: a consumer handles its entries one by one in stream order, its own pending entries
(delivered before a crash, or reclaimed) first. Per-account order therefore holds with **one
applier consumer per deployment**: two consumers in the group would split the stream between
them. At start ``run_applier`` claims (``XAUTOCLAIM``) every pending entry of other consumers,
e.g. a crashed applier that ran under another name, and applies those first.

Marks are the latest per symbol in ``keys.PRICES``, read once per batch. Bad input never stops
the applier (it is dead-lettered); a Redis error propagates (the daemon restarts).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.ticks import ticks_from_prices_hash
from marginwatch.engine.brackets import BracketTable
from marginwatch.events.models import AccountEvent, EventRejectedError, parse_event
from marginwatch.events.rules import apply_event, require_account
from marginwatch.state.accounts import StoredAccount, update_account_watching, write_account

log = logging.getLogger("marginwatch.applier")

IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600
DEAD_LETTERS_MAXLEN = 1_000_000
RECLAIM_BATCH = 100

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
    partitions: int

    @property
    def original(self) -> str:
        """The ``event`` field as written, else every field as JSON (for the dead letter)."""
        texts = {_text(name): _text(value) for name, value in self.fields.items()}
        return texts["event"] if "event" in texts else json.dumps(texts, sort_keys=True)


def ensure_group(client: redis.Redis) -> None:
    """Create the consumer group at id 0 (MKSTREAM) unless it exists."""
    try:
        client.xgroup_create(keys.ACCOUNT_EVENTS, keys.ACCOUNT_EVENTS_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def reclaim_pending(client: redis.Redis, consumer: str, min_idle_ms: int = 0) -> int:
    """``XAUTOCLAIM`` every pending entry idle for ``min_idle_ms`` to ``consumer``; how many."""
    ensure_group(client)
    start: bytes | str = "0-0"
    claimed = 0
    while True:
        reply: list[Any] = client.xautoclaim(
            keys.ACCOUNT_EVENTS,
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


def apply_pending(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    partitions: int,
    consumer: str,
    count: int = 100,
    block_ms: int | None = None,
) -> AppliedCounts:
    """One step: this consumer's pending entries if any, else up to ``count`` new ones."""
    entries = _read(client, consumer, "0", count, None)
    if not entries:
        entries = _read(client, consumer, ">", count, block_ms)
    counts = AppliedCounts()
    if not entries:
        return counts
    marks = read_marks(client)
    for stream_id, fields in entries:
        entry = _Entry(_text(stream_id), fields, marks, tables, partitions)
        counts.record(_apply_entry(client, entry))
    return counts


def run_applier(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    partitions: int,
    consumer: str,
    stop: threading.Event,
    *,
    count: int = 100,
    block_ms: int = 1_000,
    reclaim_idle_ms: int = 0,
    on_step: Callable[[AppliedCounts], None] | None = None,
) -> AppliedCounts:
    """Reclaim other consumers' pending entries, then apply steps until ``stop`` is set.

    ``on_step`` receives each step's counts (for metrics); the totals are returned.
    """
    reclaimed = reclaim_pending(client, consumer, reclaim_idle_ms)
    if reclaimed:
        log.info("account events: reclaimed %d pending entries for %s", reclaimed, consumer)
    totals = AppliedCounts()
    while not stop.is_set():
        step = apply_pending(client, tables, partitions, consumer, count, block_ms)
        totals.add(step)
        if on_step is not None and step.total:
            on_step(step)
    return totals


def _read(
    client: redis.Redis, consumer: str, start: str, count: int, block_ms: int | None
) -> list[tuple[bytes | str, Fields]]:
    """``XREADGROUP`` from ``start`` (``0``: own pending, ``>``: new); creates a missing group."""
    for attempt in range(2):
        try:
            reply: list[Any] = client.xreadgroup(  # type: ignore[assignment]
                keys.ACCOUNT_EVENTS_GROUP,
                consumer,
                {keys.ACCOUNT_EVENTS: start},
                count=count,
                block=block_ms,
            )
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error) or attempt:
                raise
            ensure_group(client)
            continue
        return [entry for _stream, entries in reply or [] for entry in entries]
    return []


def _apply_entry(client: redis.Redis, entry: _Entry) -> Outcome:
    """Parse, dedup, apply (or dead-letter) and acknowledge one entry."""
    if not entry.fields:
        reason = "event: the entry was deleted from the stream before it was applied"
        return _reject_unparsed(client, entry, reason)
    try:
        event = parse_event(entry.fields)
    except EventRejectedError as error:
        return _reject_unparsed(client, entry, error.reason)
    done_key = keys.idempotency("event:" + event.event_id) if event.event_id else None

    def mutate(
        current: StoredAccount | None, pipe: Pipeline, watched: dict[str, bytes | None]
    ) -> Outcome:
        if done_key is not None and watched[done_key] is not None:
            outcome = Outcome.DUPLICATE
        else:
            outcome = _apply_or_reject(current, event, entry, pipe)
        if done_key is not None and outcome is not Outcome.DUPLICATE:
            pipe.set(done_key, outcome.value, ex=IDEMPOTENCY_TTL_SECONDS)
        pipe.xack(keys.ACCOUNT_EVENTS, keys.ACCOUNT_EVENTS_GROUP, entry.stream_id)
        return outcome

    watch = (done_key,) if done_key is not None else ()
    return update_account_watching(client, event.account_id, watch, mutate)


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
    return Outcome.ACCEPTED


def _reject_unparsed(client: redis.Redis, entry: _Entry, reason: str) -> Outcome:
    """Dead-letter and acknowledge an entry that names no event, in one transaction."""
    with client.pipeline(transaction=True) as pipe:
        _queue_dead_letter(pipe, entry, reason)
        pipe.xack(keys.ACCOUNT_EVENTS, keys.ACCOUNT_EVENTS_GROUP, entry.stream_id)
        pipe.execute()
    return Outcome.REJECTED


def _queue_dead_letter(pipe: Pipeline, entry: _Entry, reason: str) -> None:
    log.warning("account event %s rejected: %s", entry.stream_id, reason)
    pipe.xadd(
        keys.DEAD_LETTERS,
        {"event": entry.original, "reason": reason, "stream_id": entry.stream_id},
        maxlen=DEAD_LETTERS_MAXLEN,
        approximate=True,
    )


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value

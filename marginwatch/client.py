"""What a venue's trading core calls to feed marginwatch: account events, to their partition.

An account's events go to the stream of the account's partition, in the order the core
decides them (one writer per account keeps that order). In any language, per event:

    P         = GET mw:config:partitions              (the deployment's partition count)
    partition = crc32(utf8(account_id)) mod P         (zlib's unsigned CRC-32)
    XADD mw:{p<partition>}:account-events * event <the event's JSON>

(for example ``XADD mw:{p3}:account-events * event '{"type":"deposit",...}'``). The event's
shape is in the README and ``marginwatch.events.models``; an ``event_id`` makes a resend
harmless. An event in another partition's stream is dead-lettered, not applied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of


class NotDeployedError(RuntimeError):
    """Redis holds no partition count: no marginwatch deployment was started on it."""


def partition_count(client: redis.Redis) -> int:
    """The deployment's partition count P, as recorded in Redis."""
    recorded = client.get(keys.PARTITION_COUNT)
    if recorded is None:
        raise NotDeployedError(f"{keys.PARTITION_COUNT} is not set: no deployment on this Redis")
    return int(recorded)


def account_events_stream(account_id: str, partitions: int) -> str:
    """The stream an account's events are written to."""
    return keys.account_events(partition_of(account_id, partitions))


def publish_account_event(
    client: redis.Redis, event: Mapping[str, Any] | str, partitions: int | None = None
) -> str:
    """Append one account event (a JSON object, or its text) to its partition's stream; the
    entry id. ``partitions`` is P (read from Redis when not given)."""
    document = json.loads(event) if isinstance(event, str) else dict(event)
    account_id = document.get("account_id")
    if not isinstance(account_id, str) or not account_id:
        raise ValueError("account_id: required, a non-empty string")
    text = event if isinstance(event, str) else json.dumps(document)
    count = partitions if partitions is not None else partition_count(client)
    entry_id = client.xadd(account_events_stream(account_id, count), {"event": text})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

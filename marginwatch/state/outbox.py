"""The webhook outbox of a partition, in Redis: deliveries to make, retries, dead letters.

The script that records a margin-call event appends one entry per webhook URL to the
partition's outbox stream (``keys.webhook_outbox``), so an event and its deliveries are written
together. Deliverers share the consumer group ``keys.WEBHOOK_DELIVERERS_GROUP``: a first attempt
is read with ``XREADGROUP`` and stays pending until acknowledged; an entry pending on a consumer
idle for longer than the claim time (its deliverer died) is taken over with ``XAUTOCLAIM``. A
failed attempt leaves the group and waits in the retry schedule (``keys.webhook_retries``, with
its attempt count in ``keys.webhook_attempts``), in the same transaction; a deliverer takes a due
retry by pushing its time one lease ahead (so two deliverers do not both try it). After the last
attempt an entry moves to the dead letters (``keys.webhook_dead_letters``) with its error.
"""

from __future__ import annotations

from typing import Any

import redis

from marginwatch.base import keys

Entry = tuple[str, dict[str, str]]
OUTBOX_MAXLEN = 1_000_000


def ensure_group(client: redis.Redis, partition: int) -> None:
    """Create the deliverers' group at the stream's start (and the stream) unless it exists."""
    try:
        client.xgroup_create(keys.webhook_outbox(partition), keys.WEBHOOK_DELIVERERS_GROUP, "0",
                             mkstream=True)  # fmt: skip
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _decoded(raw: list[tuple[bytes, dict[bytes, bytes]]] | None) -> list[Entry]:
    return [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in raw or []]


def read_new(client: redis.Redis, partition: int, consumer: str, count: int) -> list[Entry]:
    """Up to ``count`` entries no deliverer has taken yet, now pending on ``consumer``."""
    found: Any = client.xreadgroup(keys.WEBHOOK_DELIVERERS_GROUP, consumer,
                                   {keys.webhook_outbox(partition): ">"}, count=count)  # fmt: skip
    return _decoded(found[0][1] if found else None)


def claim_stale(
    client: redis.Redis, partition: int, consumer: str, idle_ms: int, count: int
) -> list[Entry]:
    """Up to ``count`` entries pending for longer than ``idle_ms`` (their deliverer died)."""
    found: Any = client.xautoclaim(keys.webhook_outbox(partition), keys.WEBHOOK_DELIVERERS_GROUP,
                                   consumer, idle_ms, "0-0", count=count)  # fmt: skip
    return [entry for entry in _decoded(found[1]) if entry[1]]


# KEYS: retries. ARGV: now ms, lease ms, count. The due ids, each pushed one lease ahead.
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[1] + ARGV[2], id) end
return due
"""


def take_due_retries(
    client: redis.Redis, partition: int, now_ms: int, lease_ms: int, count: int
) -> list[Entry]:
    """Up to ``count`` entries whose retry is due, taken for ``lease_ms``; an entry trimmed off
    the stream meanwhile is dropped from the schedule."""
    ids: Any = client.eval(_TAKE_DUE, 1, keys.webhook_retries(partition), now_ms, lease_ms,
                           count)  # fmt: skip
    entries = []
    for entry_id in (i.decode() for i in ids):
        raw: Any = client.xrange(keys.webhook_outbox(partition), entry_id, entry_id)
        found = _decoded(raw)
        if found:
            entries.extend(found)
        else:
            forget(client, partition, entry_id)
    return entries


def attempts_of(client: redis.Redis, partition: int, entry_id: str) -> int:
    """How many attempts of the entry failed so far."""
    found: Any = client.hget(keys.webhook_attempts(partition), entry_id)
    return int(found or 0)


def delivered(client: redis.Redis, partition: int, entry_id: str) -> None:
    """The entry was delivered: out of the group's pending entries and of the retries."""
    forget(client, partition, entry_id)


def forget(client: redis.Redis, partition: int, entry_id: str) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.xack(keys.webhook_outbox(partition), keys.WEBHOOK_DELIVERERS_GROUP, entry_id)
    pipe.zrem(keys.webhook_retries(partition), entry_id)
    pipe.hdel(keys.webhook_attempts(partition), entry_id)
    pipe.execute()


def retry_later(
    client: redis.Redis, partition: int, entry_id: str, attempts: int, due_ms: int
) -> None:
    """The entry's attempt ``attempts`` failed: out of the group, retried at ``due_ms``."""
    pipe = client.pipeline(transaction=True)
    pipe.xack(keys.webhook_outbox(partition), keys.WEBHOOK_DELIVERERS_GROUP, entry_id)
    pipe.hset(keys.webhook_attempts(partition), entry_id, attempts)
    pipe.zadd(keys.webhook_retries(partition), {entry_id: due_ms})
    pipe.execute()


def dead_letter(
    client: redis.Redis, partition: int, entry: Entry, attempts: int, error: str
) -> None:
    """Give the entry up after its last attempt: to the dead letters, with the error."""
    entry_id, fields = entry
    pipe = client.pipeline(transaction=True)
    letter: dict[Any, Any] = {**fields, "outbox_entry": entry_id, "attempts": attempts,
                              "error": error[:500]}  # fmt: skip
    pipe.xadd(keys.webhook_dead_letters(partition), letter, maxlen=OUTBOX_MAXLEN,
              approximate=True)  # fmt: skip
    pipe.xack(keys.webhook_outbox(partition), keys.WEBHOOK_DELIVERERS_GROUP, entry_id)
    pipe.zrem(keys.webhook_retries(partition), entry_id)
    pipe.hdel(keys.webhook_attempts(partition), entry_id)
    pipe.execute()


# KEYS: outbox, retries. ARGV: group. The time (ms, from its id) of the oldest entry neither
# delivered nor given up: unread by the group, taken and not acknowledged, or waiting for a
# retry; false when there is none.
_OLDEST_PENDING = """
local oldest = false
local function consider(id)
  if id then
    local ms = tonumber(string.match(id, '^(%d+)'))
    if not oldest or ms < oldest then oldest = ms end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local last = '0-0'
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local fields = {}
    for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
    if fields['name'] == ARGV[1] then
      last = fields['last-delivered-id']
      consider(redis.call('XPENDING', KEYS[1], ARGV[1])[2])
    end
  end
  local unread = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
  if unread[1] then consider(unread[1][1]) end
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do consider(id) end
return oldest
"""


def oldest_pending_ms(client: redis.Redis, partition: int) -> int | None:
    """When the partition's oldest delivery still to make was written to the outbox (ms): one
    script reading the group's first unread entry, its oldest unacknowledged one and the
    retries waiting (a set as large as the deliveries failing at the moment)."""
    script_keys = (keys.webhook_outbox(partition), keys.webhook_retries(partition))
    found: Any = client.eval(_OLDEST_PENDING, 2, *script_keys, keys.WEBHOOK_DELIVERERS_GROUP)
    return None if found is None else int(found)

"""Liquidations that are due: sent by a worker, not yet executed or skipped by an executor.

The worker adds each pool it sends a liquidation for to its partition's sorted set
(``keys.due_liquidations``), scored by when the first was sent (a later one keeps that
score), in the transaction that records its progress; the executor removes it in the
transaction that liquidates or skips it. Their number and the oldest member's age are exported
by the workers; the ``MarginwatchLiquidationOverdue`` alert fires when a due liquidation waits
too long.

Beside the set, ``keys.due_liquidation_actions`` keeps the newest action sent for each due pool
(its message), so an executor that takes one message of a partition executes every liquidation
due there (``due_actions``): in a cascade a batch is whatever came due while the executor was
busy, not what one evaluation found. The message is then the doorbell; the due set is the queue.

A message can be lost between the queue and an executor that dies at that moment (the Redis
transport pops it before it records it as unacknowledged), so a worker sends a liquidation
again when it is still due after ``liquidation_resend_after_seconds`` and nothing waits in the
partition's liquidation queue; the executor's idempotency key makes a second copy harmless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from marginwatch.base import keys
from marginwatch.base.actions import Action
from marginwatch.base.pools import pool_member, split_pool_member


def queue_due(pipe: Pipeline, partition: int, actions: Iterable[Action], now_ms: int) -> None:
    """Queue each action's pool as due since ``now_ms`` unless due already, with the action
    (the newest replaces an older one)."""
    messages: dict[FieldT, EncodableT] = {
        pool_member(a.account_id, a.pool): json.dumps(a.to_message()) for a in actions
    }
    if messages:
        since = {pool_member(a.account_id, a.pool): now_ms for a in actions}
        pipe.zadd(keys.due_liquidations(partition), since, nx=True)
        pipe.hset(keys.due_liquidation_actions(partition), mapping=messages)


def queue_done(pipe: Pipeline, partition: int, account_id: str, pool: str) -> None:
    """Queue the removal of a pool whose liquidation was executed or skipped."""
    pipe.zrem(keys.due_liquidations(partition), pool_member(account_id, pool))
    pipe.hdel(keys.due_liquidation_actions(partition), pool_member(account_id, pool))


def due_actions(client: redis.Redis, partition: int, limit: int) -> list[object]:
    """The partition's ``limit`` oldest due liquidation actions, as messages (parsed JSON; the
    caller validates them): only those are read, however many are due."""
    members: list[bytes] = client.zrange(keys.due_liquidations(partition), 0, limit - 1)  # type: ignore[assignment]
    if not members:
        return []
    values: list[bytes | None] = client.hmget(keys.due_liquidation_actions(partition), members)  # type: ignore[assignment]
    return [json.loads(value) for value in values if value is not None]


def overdue(client: redis.Redis, partition: int, sent_before_ms: int) -> list[tuple[str, str]]:
    """(account id, pool) of the partition's liquidations due since before ``sent_before_ms``."""
    members: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
        keys.due_liquidations(partition), "-inf", sent_before_ms
    )
    return [split_pool_member(member.decode()) for member in members]


def due_pools(client: redis.Redis, partition: int) -> list[tuple[str, str]]:
    """(account id, pool) of every liquidation of the partition that is due now."""
    members: list[bytes] = client.zrange(keys.due_liquidations(partition), 0, -1)  # type: ignore[assignment]
    return [split_pool_member(member.decode()) for member in members]


@dataclass(frozen=True)
class DueBacklog:
    """The partition's due liquidations: how many, and when the oldest was first sent (ms)."""

    count: int
    oldest_ms: int | None


def due_backlog(client: redis.Redis, partition: int) -> DueBacklog:
    """The partition's due liquidations, counted and the oldest found in one round trip."""
    pipe = client.pipeline(transaction=False)  # one key: one node, on a cluster too
    pipe.zcard(keys.due_liquidations(partition))
    pipe.zrange(keys.due_liquidations(partition), 0, 0, withscores=True)
    count, oldest = pipe.execute()
    return DueBacklog(int(count), int(oldest[0][1]) if oldest else None)

"""Liquidations that are due: sent by a worker, not yet executed or skipped by an executor.

The worker adds each pool it sends a liquidation for to its partition's sorted set
(``keys.due_liquidations``), scored by when the first was sent (a later one keeps that
score), in the transaction that records its progress; the executor removes it in the
transaction that liquidates or skips it. Their number and the oldest member's age are exported
by the workers; the ``MarginwatchLiquidationOverdue`` alert fires when a due liquidation waits
too long.

A message can be lost between the queue and an executor that dies at that moment (the Redis
transport pops it before it records it as unacknowledged), so a worker sends a liquidation
again when it is still due after ``liquidation_resend_after_seconds`` and nothing waits in the
partition's liquidation queue; the executor's idempotency key makes a second copy harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.pools import pool_member, split_pool_member


def queue_due(
    pipe: Pipeline, partition: int, pools: Iterable[tuple[str, str]], now_ms: int
) -> None:
    """Queue (account id, pool) as due since ``now_ms`` unless due already."""
    members = {pool_member(account_id, pool): now_ms for account_id, pool in pools}
    if members:
        pipe.zadd(keys.due_liquidations(partition), members, nx=True)


def queue_done(pipe: Pipeline, partition: int, account_id: str, pool: str) -> None:
    """Queue the removal of a pool whose liquidation was executed or skipped."""
    pipe.zrem(keys.due_liquidations(partition), pool_member(account_id, pool))


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

"""Margin-call episodes in Redis: whether a pool is in one survives any restart.

An episode is its key (``keys.episode``, set ``NX`` by the margin call, deleted by the
resolution) and its member in the partition's set of open episodes
(``keys.partition_episodes``), which a worker reads when it loads the partition. An episode also
ends when its pool stops holding a position (liquidated, or closed by a fill): the transaction
that writes the account ends it (``end_vanished_episodes``), so the next position of that pool
gets its own margin call.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.pools import open_pools, pool_member, split_pool_member
from marginwatch.engine.types import Account


def end_vanished_episodes(pipe: Pipeline, partition: int, before: Account, after: Account) -> None:
    """Queue the end of the episodes of the pools ``before`` held and ``after`` does not."""
    for pool in sorted(open_pools(before) - open_pools(after)):
        pipe.delete(keys.episode(partition, before.account_id, pool))
        pipe.srem(keys.partition_episodes(partition), pool_member(before.account_id, pool))


def open_episodes(client: redis.Redis, partition: int) -> Iterator[tuple[str, str]]:
    """(account id, pool) of every open episode of the partition."""
    members: set[bytes] = client.smembers(keys.partition_episodes(partition))  # type: ignore[assignment]
    for member in members:
        yield split_pool_member(member.decode())

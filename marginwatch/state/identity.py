"""Which Redis a daemon talks to, so that it notices when Redis restarted or lost its data.

A Redis restarted from its append-only file holds the state of a moment before the crash: with
``appendfsync everysec`` the last second of acknowledged writes may be gone (an account change,
a liquidation and its ledger entry, an episode), while a worker's book in memory already holds
them. A worker therefore compares the server's ``run_id`` (new at every start) and the
deployment's generation token (``keys.GENERATION``, written once with ``SET NX``; absent from a
Redis that came back empty) with what it saw when it loaded its books, and reads every book
again when either changed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from marginwatch.base import keys
from marginwatch.state.connection import is_cluster

RESTARTED = "redis_restarted"
DATA_LOST = "redis_data_lost"


@dataclass(frozen=True)
class RedisIdentity:
    """The server's run id and the deployment's generation token."""

    run_id: str
    generation: str

    def change_from(self, before: RedisIdentity) -> str | None:
        """Why a book loaded under ``before`` is no longer current (``None``: it is)."""
        if self.generation != before.generation:
            return DATA_LOST
        return RESTARTED if self.run_id != before.run_id else None


def redis_identity(client: redis.Redis) -> RedisIdentity:
    """The identity now, writing the generation token first if it is missing. On a cluster,
    the run ids of its primaries (a fail-over, or a restart of any, changes them)."""
    pipe = client.pipeline(transaction=False)  # one key: one node, on a cluster too
    pipe.set(keys.GENERATION, secrets.token_hex(8), nx=True)
    pipe.get(keys.GENERATION)
    _written, generation = pipe.execute()
    return RedisIdentity(_run_ids(client), generation.decode())


def _run_ids(client: redis.Redis) -> str:
    if not is_cluster(client):
        info: Any = client.info("server")
        return str(info["run_id"])
    cluster = cast(RedisCluster, client)
    found: Any = cluster.info("server", target_nodes=RedisCluster.PRIMARIES)
    return ",".join(sorted(str(node["run_id"]) for node in found.values()))

"""The state store's client: a standalone Redis, or a Redis Cluster.

``MARGINWATCH_REDIS_URL`` names a standalone Redis (``redis://host:port/0``, ``rediss://`` for
TLS), or a Redis Cluster by one or more of its nodes, comma-separated
(``redis://a:7000,redis://b:7001``; one node that answers ``cluster_enabled:1`` is enough, the
client discovers the others). Every multi-key operation of marginwatch stays in one hash slot
(one partition's ``mw:{pN}:`` keys, or the prices' ``mw:{prices}:`` keys), so the scripts and the
``WATCH``/``MULTI`` transactions of the code run unchanged on a cluster; the code is written
against the commands both clients share, and the cluster client is returned as ``redis.Redis``
for its type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster


def open_redis(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``: a cluster client for several nodes or a cluster node."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if len(urls) > 1:
        return _cluster(urls, options)
    client = redis.Redis.from_url(urls[0], **options)
    if _is_cluster_node(client):
        client.close()
        return _cluster(urls, options)
    return client


def _cluster(urls: list[str], options: dict[str, Any]) -> redis.Redis:
    first = urlsplit(urls[0])
    if first.username:
        options.setdefault("username", unquote(first.username))
    if first.password:
        options.setdefault("password", unquote(first.password))
    if first.scheme == "rediss":
        options.setdefault("ssl", True)
    nodes = [_node(url) for url in urls]
    return cast(redis.Redis, RedisCluster(startup_nodes=nodes, **options))


def _node(url: str) -> ClusterNode:
    parts = urlsplit(url if "://" in url else f"redis://{url}")
    node: ClusterNode = ClusterNode(parts.hostname or "localhost", parts.port or 6379)  # type: ignore[no-untyped-call]
    return node


def _is_cluster_node(client: redis.Redis) -> bool:
    """Whether the server says it is a cluster node (``False`` when it does not answer: the
    error surfaces on first use, as for any client)."""
    try:
        info: Any = client.info("cluster")
    except redis.RedisError:
        return False
    return bool(info.get("cluster_enabled"))


def is_cluster(client: redis.Redis) -> bool:
    return isinstance(client, RedisCluster)


def queue_script(pipe: Pipeline, script: str, script_keys: Sequence[str], *args: Any) -> None:
    """Queue ``EVAL script`` on a pipeline of either client (the cluster pipeline has no
    ``eval`` method but routes a raw ``EVAL`` by its first key, like any command)."""
    # redis-py leaves Pipeline.execute_command untyped.
    pipe.execute_command("EVAL", script, len(script_keys), *script_keys, *args)  # type: ignore[no-untyped-call]


class ReplicationTimeoutError(redis.TimeoutError):
    """Fewer replicas than required acknowledged a write in time (retried like a timeout)."""


def wait_for_replicas(client: redis.Redis, marker_key: str, replicas: int, timeout_ms: int) -> None:
    """Return once ``replicas`` replicas of the primary serving ``marker_key`` hold every write
    it took so far; ``ReplicationTimeoutError`` when fewer did within ``timeout_ms``.

    ``WAIT`` counts the writes of the connection it is sent on, so it follows a write of
    ``marker_key`` (``INCR``) on the same connection, in one pipeline: replication is in order,
    so covering the marker covers everything written before it, by any connection."""
    if replicas <= 0:
        return
    node: Any = client
    if is_cluster(client):
        # redis-py leaves get_node_from_key untyped.
        serving = cast(RedisCluster, client).get_node_from_key(marker_key)  # type: ignore[no-untyped-call]
        node = serving.redis_connection
    pipe = node.pipeline(transaction=False)
    pipe.incr(marker_key)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    _marker, acknowledged = pipe.execute()
    if int(acknowledged) < replicas:
        raise ReplicationTimeoutError(
            f"{acknowledged} of {replicas} replicas acknowledged the write within {timeout_ms} ms"
        )

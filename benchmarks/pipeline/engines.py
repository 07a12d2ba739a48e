"""The pipeline benchmark: the servers it runs on. ``single``: one private redis-server for the
state and Celery's broker. ``cluster``: a Redis Cluster of three primaries with a replica each
for the state and a private RabbitMQ node (quorum queues) as the broker, started with the test
suite's server helpers (tests/servers.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks.pipeline.config import AOF_AS_DEPLOYED
from marginwatch.cli.embedded_redis import start_redis_server

KINDS = ("single", "cluster")
TITLES = {"single": "single Redis (state and broker; AOF, fsync every second)",
          "cluster": "Redis Cluster 3+3 (state) + RabbitMQ (broker)"}  # fmt: skip


@dataclass
class Engines:
    """Where the state and the broker are, the state's primaries, and the servers' pids."""

    kind: str
    state_url: str
    broker_url: str
    primaries: list[str]
    pids: dict[str, int]
    stops: list[Callable[[], None]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))

    def stop(self) -> None:
        for stop in reversed(self.stops):
            stop()


def start_engines(kind: str) -> Engines:
    if kind == "single":
        server = start_redis_server(extra_args=AOF_AS_DEPLOYED)
        return Engines(kind, server.url, server.url, [server.url],
                       {"redis": server.process.pid}, [server.stop])  # fmt: skip
    from tests.servers import start_rabbitmq, start_redis_cluster  # noqa: PLC0415 (cluster only)

    cluster = start_redis_cluster()
    rabbitmq = start_rabbitmq()
    primaries = [f"redis://127.0.0.1:{n.port}/0" for n in cluster.nodes
                 if cluster.role(n) == "master"]  # fmt: skip
    pids = {f"redis-{n.port}": n.process.pid for n in cluster.nodes}
    pids["rabbitmq"] = _rabbitmq_pid(rabbitmq.directory / "pid")
    return Engines(kind, cluster.url, rabbitmq.url, primaries, pids,
                   [cluster.stop, rabbitmq.stop])  # fmt: skip


def _rabbitmq_pid(path: Path) -> int:
    """The Erlang VM's pid (the process that does the work), from the node's pid file."""
    return int(path.read_text().strip()) if path.exists() else 0


def broker_client(engines: Engines) -> redis.Redis | None:
    client: Any = redis.Redis.from_url(engines.broker_url) if engines.broker_is_redis else None
    return client  # type: ignore[no-any-return]

"""A liquidation's writes held by a replica before its task is acknowledged
(``MARGINWATCH_WAIT_REPLICAS``): a real primary and replica; the replica paused with SIGSTOP."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, start_redis_server
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.executor.tasks import ExecutorRuntime, run_liquidations
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import make_celery
from marginwatch.state.accounts import store_accounts
from marginwatch.state.connection import ReplicationTimeoutError, wait_for_replicas
from tests.polling import wait_for

D = Decimal
ACCOUNT = Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))
LIQUIDATION = Action(ActionKind.LIQUIDATION, 0, "E", "cross", 1, 7, 1_700_000_000_000)
MARKER = keys.partition_replicated(0)


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = start_redis_server()
    replica = start_redis_server(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])

    def linked() -> bool:
        info = redis.Redis(port=replica.port).info("replication")
        return info.get("master_link_status") == "up"

    wait_for(linked, "the replica in sync")
    yield primary, replica
    os.kill(replica.process.pid, signal.SIGCONT)
    replica.stop()
    primary.stop()


def executor(primary: RedisServer, replicas: int) -> ExecutorRuntime:
    settings = Settings(redis_url=primary.url, partitions=1, wait_replicas=replicas,
                        wait_timeout_ms=300)  # fmt: skip
    client = redis.Redis.from_url(primary.url)
    return ExecutorRuntime(settings, client, dict(default_tables()),
                           make_celery(settings, primary.url))  # fmt: skip


def bankrupt(client: redis.Redis) -> None:
    store_accounts(client, [ACCOUNT], 1)
    client.set(keys.insurance_fund(0), "1000")
    Publisher(client).publish([Tick("BTCUSDT", D(48_000), 1)])


def test_wait_returns_once_the_replica_holds_the_writes(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    """With the replica up, the wait passes; paused, it times out and says how many acked."""
    primary, replica = primary_and_replica
    client = redis.Redis.from_url(primary.url)
    wait_for_replicas(client, MARKER, 1, 1000)
    os.kill(replica.process.pid, signal.SIGSTOP)
    client.set("mw:{p0}:x", "1")
    with pytest.raises(ReplicationTimeoutError, match="0 of 1 replicas"):
        wait_for_replicas(client, MARKER, 1, 200)


def test_a_liquidation_is_not_acknowledged_before_a_replica_holds_it(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    """Replica paused: the liquidation is written on the primary but its task fails (to be
    retried, not acknowledged); resumed, the retry finds it done and the wait passes, and the
    replica holds exactly one liquidation."""
    primary, replica = primary_and_replica
    runtime = executor(primary, replicas=1)
    bankrupt(runtime.client)
    wait_for(lambda: redis.Redis(port=replica.port).exists(keys.account(0, "E")) == 1, "replicated")
    os.kill(replica.process.pid, signal.SIGSTOP)
    with pytest.raises(ReplicationTimeoutError):
        run_liquidations(runtime, [LIQUIDATION])[0]
    assert runtime.client.xlen(keys.liquidations(0)) == 1  # written on the primary
    os.kill(replica.process.pid, signal.SIGCONT)
    assert run_liquidations(runtime, [LIQUIDATION])[0] == "duplicate"
    assert redis.Redis(port=replica.port).xlen(keys.liquidations(0)) == 1


def test_without_the_setting_nothing_waits(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    """MARGINWATCH_WAIT_REPLICAS=0 (the default): acknowledged with the replica paused."""
    primary, replica = primary_and_replica
    runtime = executor(primary, replicas=0)
    bankrupt(runtime.client)
    os.kill(replica.process.pid, signal.SIGSTOP)
    assert run_liquidations(runtime, [LIQUIDATION])[0] == "liquidated"

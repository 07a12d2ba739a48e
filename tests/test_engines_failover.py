"""Fail-over on the distributed engines: a Redis Cluster primary killed mid-run (its replica
takes over), and one executor of a pair killed on RabbitMQ; nothing lost or doubled."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.producer.publisher import Publisher
from marginwatch.state.accounts import store_accounts
from marginwatch.state.connection import open_redis
from marginwatch.state.fund import credit_ledger, read_ledgers
from tests.daemons import Daemons
from tests.polling import wait_for
from tests.servers import RabbitMQ, RedisCluster, start_rabbitmq, start_redis_cluster

D = Decimal
PARTITIONS = 4
ACCOUNTS = [f"k{n}" for n in range(40)]
POSITION = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS)
FUND = D(1_000_000)


def engines(state_url: str, broker_url: str) -> dict[str, str]:
    """The daemons' environment on these servers."""
    return {"MARGINWATCH_REDIS_URL": state_url, "MARGINWATCH_BROKER_URL": broker_url,
            "MARGINWATCH_PARTITIONS": str(PARTITIONS)}  # fmt: skip


def tick(client: redis.Redis, price: int) -> None:
    Publisher(client).publish([Tick("BTCUSDT", D(price), time.time_ns() // 1_000_000)])


def liquidated(client: redis.Redis) -> Counter[str]:
    """Liquidations recorded per account (none while the cluster fails over)."""
    found: Counter[str] = Counter()
    try:
        for p in range(PARTITIONS):
            for _id, fields in client.xrange(keys.liquidations(p)):
                if fields[b"kind"] == b"liquidation":
                    found[fields[b"account_id"].decode()] += 1
    except redis.RedisError:
        return Counter()
    return found


def run_the_crash(client: redis.Redis, daemons: Daemons, fault: Callable[[], None]) -> None:
    """Margin calls, then bankruptcy of every account; ``fault()`` once a quarter of the
    liquidations are done; then every account liquidated exactly once, the fund paid once."""
    store_accounts(client, [Account(n, D(1265), (POSITION,)) for n in ACCOUNTS], PARTITIONS)
    credit_ledger(client, 0, FUND)
    tick(client, 50_000)
    daemons.start("executor-1", "executor")
    daemons.start("executor-2", "executor")
    daemons.start("worker-a", "worker", "--partitions", "0-1")
    daemons.start("worker-b", "worker", "--partitions", "2-3")
    evaluated = [keys.partition_evaluated(p) for p in range(PARTITIONS)]
    wait_for(lambda: all(client.get(k) for k in evaluated), "the first evaluations", timeout=60)
    tick(client, 48_000)  # 1,265 − 2,000 < 0: every account bankrupt
    wait_for(lambda: sum(liquidated(client).values()) >= len(ACCOUNTS) // 4, "some liquidations")
    fault()
    wait_for(lambda: sorted(liquidated(client)) == sorted(ACCOUNTS),
             lambda: f"liquidated {len(liquidated(client))}", timeout=90)  # fmt: skip
    wait_for(lambda: settled(client), "no liquidation still due")  # a duplicate would be one
    assert liquidated(client) == Counter(ACCOUNTS)  # each exactly once
    assert daemons.alive()
    # 1,265 + 1 × (48,000 − 50,000): the fund covers 735 of each, once.
    total = sum(read_ledgers(client, range(PARTITIONS)).values(), D(0))
    assert total == FUND - len(ACCOUNTS) * D(735)


def settled(client: redis.Redis) -> bool:
    """No partition has a liquidation sent and not yet executed or skipped."""
    try:
        return not any(client.zcard(keys.due_liquidations(p)) for p in range(PARTITIONS))
    except redis.RedisError:
        return False


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    started = start_redis_cluster()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQ]:
    node = start_rabbitmq()
    yield node
    node.stop()


def test_a_killed_cluster_primary_loses_no_liquidation(
    cluster: RedisCluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The primary serving a partition is killed mid-run; its replica takes over; every
    liquidation happens once."""
    redis.Redis.from_url(redis_server.url).flushdb()
    client = open_redis(cluster.url)
    daemons = Daemons(engines(cluster.url, redis_server.url), tmp_path)
    busy = partition_of(ACCOUNTS[0], PARTITIONS)
    try:
        run_the_crash(
            client, daemons, lambda: cluster.kill(cluster.primary_of(keys.account(busy, "x")))
        )
    finally:
        daemons.stop_all()


def test_a_killed_executor_of_a_pair_loses_nothing_on_rabbitmq(
    rabbitmq: RabbitMQ, redis_server: RedisServer, tmp_path: Path
) -> None:
    """RabbitMQ as the broker: one of two executors is killed mid-run; the messages it held
    return to their queues at once and the other executes them."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    daemons = Daemons(engines(redis_server.url, rabbitmq.url), tmp_path)
    try:
        run_the_crash(client, daemons, lambda: daemons.kill("executor-1"))
    finally:
        daemons.stop_all()

"""Crash points: real daemons exit at a named point (``MARGINWATCH_CRASH_AT``); what they
leave behind is recovered by their restart, with nothing lost or done twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.crash import EXIT_STATUS
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import executor_queues
from marginwatch.state.accounts import store_accounts
from marginwatch.state.fund import credit_ledger, read_ledgers
from tests.polling import wait_for

D = Decimal
BOOK = [Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))]


class Deployment:
    """One-partition daemons as subprocesses, each optionally armed with a crash point."""

    def __init__(self, server: RedisServer, directory: Path) -> None:
        self.directory = directory
        self.env = {**os.environ, "MARGINWATCH_REDIS_URL": server.url,
                    "MARGINWATCH_PARTITIONS": "1",
                    "MARGINWATCH_VISIBILITY_TIMEOUT_SECONDS": "4"}  # fmt: skip
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        env = {**self.env, **({"MARGINWATCH_CRASH_AT": crash_at} if crash_at else {})}
        log = (self.directory / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "marginwatch", *args, "--loglevel", "WARNING"]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            process.wait(timeout=30)


@pytest.fixture
def deployment(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Deployment]:
    store_accounts(redis_client, BOOK, 1)
    credit_ledger(redis_client, 0, D(1000))
    Publisher(redis_client).publish([Tick("BTCUSDT", D(50_000), time.time_ns() // 1_000_000)])
    running = Deployment(redis_server, tmp_path)
    yield running
    running.stop_all()


def drained(client: redis.Redis) -> bool:
    """Nothing queued, nothing taken and unacknowledged."""
    queued = sum(client.llen(queue) for queue in executor_queues([0]))
    return queued == 0 and client.hlen("unacked") == 0


def test_an_executor_killed_after_writing_a_liquidation_does_not_liquidate_twice(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    """It dies after the liquidation's transaction, before acknowledging the task; the task is
    redelivered to the next executor, which finds it done."""
    crashing = deployment.start("executor-1", "executor", crash_at="executor:after-liquidation")
    deployment.start("worker", "worker", "--partitions", "0")
    wait_for(lambda: redis_client.get(keys.partition_evaluated(0)), "the first evaluation")
    Publisher(redis_client).publish([Tick("BTCUSDT", D(48_000), time.time_ns() // 1_000_000)])
    assert crashing.wait(timeout=60) == EXIT_STATUS
    assert redis_client.xlen(keys.liquidations(0)) == 1
    assert redis_client.hlen("unacked") == 1  # taken, written, never acknowledged
    deployment.start("executor-2", "executor")
    wait_for(lambda: drained(redis_client), "the redelivered liquidation to be acknowledged")
    assert [f[b"kind"] for _id, f in redis_client.xrange(keys.liquidations(0))] == [b"liquidation"]
    # 1,265 + 1 × (48,000 − 50,000): the fund covered 735, once.
    assert read_ledgers(redis_client, [0]) == {0: D(1000) - D(735)}
    assert redis_client.zcard(keys.due_liquidations(0)) == 0


def test_a_worker_killed_between_its_pending_flags_and_its_tasks_is_not_blind(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    """It dies with the flags set and no evaluation queued; restarted, it evaluates at once
    (well before the flags expire)."""
    crashing = deployment.start("worker-1", "worker", "--partitions", "0",
                                crash_at="dispatcher:after-pending-flags")  # fmt: skip
    assert crashing.wait(timeout=60) == EXIT_STATUS
    assert redis_client.exists(keys.partition_pending(0))
    assert redis_client.llen("marginwatch.partition.0") == 0
    deployment.start("executor", "executor")
    deployment.start("worker-2", "worker", "--partitions", "0")
    ttl = redis_client.ttl(keys.partition_pending(0))
    wait_for(lambda: redis_client.get(keys.partition_evaluated(0)), "an evaluation",
             timeout=max(1, ttl - 1))  # fmt: skip


def test_kill_9_at_bad_moments_keeps_every_action_exactly_once(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """60 accounts through two margin-call episodes, a resolution and a liquidation, in held
    price steps. The worker is SIGKILLed right after the tick that calls them; the executor
    is SIGKILLed with resolutions in flight, and again with liquidations in flight. Each
    account ends with exactly two margin calls, one resolution and one liquidation, and the
    fund paid each deficit once."""
    names = [f"k{n}" for n in range(60)]
    position = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS)
    store_accounts(redis_client, [Account(n, D(1265), (position,)) for n in names], 1)
    credit_ledger(redis_client, 0, D(1_000_000))
    deployment = Deployment(redis_server, tmp_path)
    try:
        run_the_steps(deployment, redis_client, len(names))
    finally:
        deployment.stop_all()
    kinds = Counter(
        (fields[b"account_id"].decode(), fields[b"kind"].decode())
        for _id, fields in redis_client.xrange(keys.margin_call_events(0))
    )
    assert kinds == Counter(
        {(n, "margin_call"): 2 for n in names} | {(n, "resolved"): 1 for n in names}
    )
    entries = redis_client.xrange(keys.liquidations(0))
    liquidated = Counter(f[b"account_id"].decode() for _id, f in entries
                         if f[b"kind"] == b"liquidation")  # fmt: skip
    assert liquidated == Counter(names)
    # 1,265 + 1 × (48,000 − 50,000): 735 of each deficit is the fund's, once.
    assert read_ledgers(redis_client, [0]) == {0: D(1_000_000) - 60 * D(735)}


def run_the_steps(deployment: Deployment, client: redis.Redis, accounts: int) -> None:
    """The held price steps, each waited out until nothing is in flight."""

    def count(kind: bytes, stream: str) -> int:
        return sum(f[b"kind"] == kind for _id, f in client.xrange(stream))

    def tick(price: int) -> None:
        Publisher(client).publish([Tick("BTCUSDT", D(price), time.time_ns() // 1_000_000)])

    tick(50_000)
    executor = deployment.start("executor-1", "executor")
    worker = deployment.start("worker-1", "worker", "--partitions", "0")
    wait_for(lambda: client.get(keys.partition_evaluated(0)), "the first evaluation")
    calls = keys.margin_call_events(0)
    tick(48_950)  # every account in margin call: 195.8 / 215
    os.kill(worker.pid, signal.SIGKILL)  # right after the tick: actions sent, or not
    worker.wait(timeout=10)
    deployment.start("worker-2", "worker", "--partitions", "0")
    wait_for(lambda: count(b"margin_call", calls) >= accounts and drained(client), "the calls")
    tick(49_500)  # recovered: 198 / 765, below the re-arm level

    def state() -> str:
        episodes = client.scard(keys.partition_episodes(0))
        return (f"calls {count(b'margin_call', calls)}, resolved {count(b'resolved', calls)}, "
                f"liquidated {count(b'liquidation', keys.liquidations(0))}, open episodes "
                f"{episodes}, drained {drained(client)}")  # fmt: skip

    wait_for(lambda: count(b"resolved", calls) >= accounts // 4, lambda: f"some: {state()}")
    os.kill(executor.pid, signal.SIGKILL)  # resolutions in flight
    executor.wait(timeout=10)
    executor = deployment.start("executor-2", "executor")
    wait_for(lambda: count(b"resolved", calls) >= accounts and drained(client), "resolutions")
    tick(48_000)  # bankrupt: a second episode's margin call, then the liquidation
    liquidations = keys.liquidations(0)
    wait_for(lambda: count(b"liquidation", liquidations) >= accounts // 4, "some liquidations")
    os.kill(executor.pid, signal.SIGKILL)  # liquidations in flight
    executor.wait(timeout=10)
    deployment.start("executor-3", "executor")
    wait_for(lambda: count(b"liquidation", liquidations) >= accounts and drained(client),
             "every liquidation")  # fmt: skip

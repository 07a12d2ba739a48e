"""A Redis restart needs no manual step: daemons reconnect, and a worker whose Redis restarted
(or lost its data) reads its books again, so writes lost with the restart are redone."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, start_redis_server
from marginwatch.client import publish_account_event
from marginwatch.engine.brackets import default_tables
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import make_celery
from marginwatch.state.accounts import read_account, store_accounts
from marginwatch.state.fund import credit_ledger, read_ledgers
from marginwatch.state.identity import DATA_LOST, RESTARTED
from marginwatch.worker.tasks import WorkerRuntime
from tests.polling import wait_for
from tests.test_crash_points import BOOK, Deployment

D = Decimal


class Restartable:
    """A private redis-server whose data directory outlives it, restarted on the same port."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.data, self.args = directory, args
        self.data.mkdir(exist_ok=True)
        self.server = self._start(None)

    def _start(self, port: int | None) -> RedisServer:
        return start_redis_server(port=port, extra_args=["--dir", str(self.data), *self.args])

    def kill_and_start(self, data: Path | None = None) -> None:
        """kill -9, then start again on the same port from ``data`` (default: its own)."""
        self.server.process.kill()
        self.server.process.wait()
        if data is not None:
            self.data = data
        self.server = self._start(self.server.port)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    server = Restartable(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    yield server
    server.server.stop()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_worker_notices_a_restart_and_a_loss_of_data(restartable: Restartable) -> None:
    """Same server: nothing; restarted from its AOF: redis_restarted; flushed: redis_data_lost;
    each time its books are forgotten, to be read again, and the reload is counted."""
    client = restartable.client()
    store_accounts(client, BOOK, 1)
    settings = Settings(redis_url=restartable.server.url, partitions=1)
    runtime = WorkerRuntime(settings, client, dict(default_tables()),
                            make_celery(settings, restartable.server.url))  # fmt: skip
    assert runtime.check_redis() is None
    runtime.book(0)
    runtime.identity_due.last.clear()
    assert (runtime.check_redis(), sorted(runtime.books)) == (None, [0])
    restartable.kill_and_start()
    runtime.identity_due.last.clear()
    assert (runtime.check_redis(), runtime.books) == (RESTARTED, {})
    assert read_account(client, "E", 1) is not None  # the AOF kept it
    runtime.book(0)
    client.flushall()
    runtime.identity_due.last.clear()
    assert (runtime.check_redis(), runtime.books) == (DATA_LOST, {})
    reloads = runtime.metrics.book_reloads
    assert [reloads.labels(r)._value.get() for r in (RESTARTED, DATA_LOST)] == [1, 1]


def test_daemons_carry_on_across_a_redis_restart(restartable: Restartable, tmp_path: Path) -> None:
    """Worker and executor run on; Redis is killed and restarted from its AOF; an account
    event after the restart is applied, and a crash after it liquidated, once."""
    client = restartable.client()
    deployment = started(client, restartable, tmp_path)
    try:
        restartable.kill_and_start()
        client = restartable.client()
        publish_account_event(client, {"account_id": "E", "type": "deposit", "amount": "35"})
        wait_for(lambda: version_of(client) == 2, "the deposit applied", timeout=60)
        Publisher(client).publish([Tick("BTCUSDT", D(48_000), now_ms())])
        wait_for(lambda: client.xlen(keys.liquidations(0)) == 1, "the liquidation", timeout=60)
        assert all(p.poll() is None for p in deployment.processes)  # none died
    finally:
        deployment.stop_all()
    # 1,265 + 35 + 1 × (48,000 − 50,000): the fund covered 700, once.
    assert read_ledgers(client, [0]) == {0: D(1000) - D(700)}


def started(client: redis.Redis, restartable: Restartable, tmp_path: Path) -> Deployment:
    """BOOK, a fund of 1,000 and a mark of 50,000 in Redis; an executor and a worker running,
    past their first evaluation."""
    store_accounts(client, BOOK, 1)
    credit_ledger(client, 0, D(1000))
    Publisher(client).publish([Tick("BTCUSDT", D(50_000), now_ms())])
    deployment = Deployment(restartable.server, tmp_path)
    deployment.start("executor", "executor")
    deployment.start("worker", "worker", "--partitions", "0")
    wait_for(lambda: client.get(keys.partition_evaluated(0)), "the first evaluation")
    return deployment


def version_of(client: redis.Redis) -> int | None:
    stored = read_account(client, "E", 1)
    return None if stored is None else stored.version


def test_a_liquidation_lost_with_the_last_writes_is_done_again(
    restartable: Restartable, tmp_path: Path
) -> None:
    """Redis comes back holding the state of a moment before a liquidation (as after a crash
    with appendfsync everysec): the pool is open again there, while the worker's book had seen
    it closed; the worker reads its book again and the pool is liquidated in what Redis kept,
    once."""
    client = restartable.client()
    deployment = started(client, restartable, tmp_path)
    try:
        client.config_set("appendonly", "no")  # from here on, the snapshot is what survives
        client.save()
        earlier = tmp_path / "earlier"
        shutil.copytree(restartable.data, earlier)
        Publisher(client).publish([Tick("BTCUSDT", D(48_000), now_ms())])
        wait_for(lambda: client.xlen(keys.liquidations(0)) == 1, "the liquidation")
        Publisher(client).publish([Tick("BTCUSDT", D(48_000), now_ms())])
        newest = int(client.get(keys.TICK_SEQUENCE) or 0)
        wait_for(lambda: int(client.get(keys.partition_evaluated(0)) or 0) >= newest,
                 "an evaluation after the liquidation (its book read the change)")  # fmt: skip
        restartable.args = ("--appendonly", "no")
        restartable.kill_and_start(earlier)
        client = restartable.client()
        stored = read_account(client, "E", 1)
        assert stored is not None
        assert stored.account.positions  # open again
        assert client.xlen(keys.liquidations(0)) == 0
        Publisher(client).publish([Tick("BTCUSDT", D(48_000), now_ms())])  # the feed goes on
        wait_for(lambda: client.xlen(keys.liquidations(0)) == 1, "the liquidation, again",
                 timeout=60)  # fmt: skip
        assert all(p.poll() is None for p in deployment.processes)
    finally:
        deployment.stop_all()
    stored = read_account(client, "E", 1)
    assert stored is not None
    assert stored.account.positions == ()
    assert read_ledgers(client, [0]) == {0: D(1000) - D(735)}

"""Two real executors drain the same due liquidations at once, one killed by its crash point
after its write and the other by SIGKILL while it works: every pool is liquidated exactly once,
and the fund moves by the sum of the deficits, exactly."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, free_port
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import executor_queues, make_celery, send_actions
from marginwatch.state.accounts import read_account, store_accounts
from marginwatch.state.due import queue_due
from marginwatch.state.fund import credit_ledger, read_ledgers
from tests.daemons import Daemons
from tests.polling import wait_for

D = Decimal
POOLS = 400
FUND = D(1_000_000)
BTC = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS)
# At 48,000 each cross pool holds MB = wallet − 2,000 < 0: liquidated with no fee, the fund
# covering 2,000 − wallet (wallets 1,265.00 to 1,664.00).
BOOK = [Account(f"a{n:03d}", D(1265) + n, (BTC,)) for n in range(POOLS)]
DEFICITS = sum((D(2000) - account.cross_wallet_balance for account in BOOK), D(0))


@pytest.fixture
def due_everywhere(redis_server: RedisServer, redis_client: redis.Redis) -> Settings:
    """The book bankrupt at 48,000, every pool's liquidation recorded as due."""
    settings = Settings(redis_url=redis_server.url, partitions=1)
    store_accounts(redis_client, BOOK, 1)
    credit_ledger(redis_client, 0, FUND)
    Publisher(redis_client).publish([Tick("BTCUSDT", D(48_000), time.time_ns() // 1_000_000)])
    pipe = redis_client.pipeline(transaction=True)
    queue_due(pipe, 0, [liquidation(a.account_id) for a in BOOK], time.time_ns() // 1_000_000)
    pipe.execute()
    return settings


def liquidation(account_id: str) -> Action:
    return Action(ActionKind.LIQUIDATION, 0, account_id, "cross", 1, 1, 1)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def executor(directory: Path, settings: Settings, name: str, **env: str) -> tuple[Daemons, int]:
    """An executor of partition 0 with its own metrics port; waits until it is ready."""
    port = free_port()
    daemons = Daemons({"MARGINWATCH_REDIS_URL": settings.redis_url, "MARGINWATCH_PARTITIONS": "1",
                       "MARGINWATCH_VISIBILITY_TIMEOUT_SECONDS": "4",
                       "MARGINWATCH_METRICS_PORT": str(port), **env}, directory)  # fmt: skip
    daemons.start(name, "executor")
    wait_for(lambda: ready(port), f"{name} ready", timeout=120)
    return daemons, port


def drained(client: redis.Redis) -> bool:
    """Nothing due, queued, or taken and unacknowledged."""
    queued = sum(client.llen(queue) for queue in executor_queues([0]))
    due = client.zcard(keys.due_liquidations(0)) + client.hlen(keys.due_liquidation_actions(0))
    return queued + due + client.hlen("unacked") == 0


def test_two_executors_killed_mid_cascade_liquidate_every_pool_once(
    due_everywhere: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Both executors take a doorbell and drain the 400 due pools together; one exits at its
    crash point after its first write, the other is SIGKILLed once the liquidations started;
    restarted, they finish. One liquidation per pool, version 2, the fund down by the deficits."""
    settings = due_everywhere
    crashing, _ = executor(tmp_path, settings, "crashing",
                           MARGINWATCH_CRASH_AT="executor:after-liquidation")  # fmt: skip
    killed, _ = executor(tmp_path, settings, "killed")
    app = make_celery(settings, settings.redis_url)
    for half in (BOOK[: POOLS // 2], BOOK[POOLS // 2 :]):  # a doorbell for each
        send_actions(app, 0, [liquidation(a.account_id) for a in half])
    wait_for(lambda: redis_client.xlen(keys.liquidations(0)) > 0, "the first liquidations")
    killed.kill("killed")
    wait_for(lambda: crashing.processes["crashing"].poll() is not None, "the crash point")
    restarted = [executor(tmp_path, settings, name)[0] for name in ("crashing-2", "killed-2")]
    try:
        wait_for(lambda: drained(redis_client), "every due liquidation done", timeout=120)
    finally:
        for daemons in restarted:
            daemons.stop_all()
        app.close()
    kinds = Counter(
        (fields[b"kind"], fields[b"account_id"])
        for _id, fields in redis_client.xrange(keys.liquidations(0))
    )
    liquidated = {account for (kind, account), count in kinds.items() if kind == b"liquidation"}
    assert len(liquidated) == POOLS
    assert {count for (kind, _a), count in kinds.items() if kind == b"liquidation"} == {1}
    for account in BOOK:
        stored = read_account(redis_client, account.account_id, 1)
        assert stored is not None
        assert (stored.version, stored.account.positions) == (2, ())
    assert read_ledgers(redis_client, [0])[0] == FUND - DEFICITS

"""The live pipeline end to end: real servers, producer, partition workers and executor, three
ways with the same expectations: a single Redis for state and broker; a Redis Cluster of three
primaries with a replica each for state (a single Redis as Celery's broker); a single Redis for
state with RabbitMQ (quorum queues) as the broker.

A scripted price path in three stages takes chosen accounts through warning, margin call and
liquidation while the others stay untouched:

* S1 (BTCUSDT 49,000): A, B, C and E in ``warning``; no event;
* S2 (BTCUSDT 48,950): A, B, C, E in margin call: one MARGIN_CALL each;
* S3 (BTCUSDT 44,000, ETHUSDT 2,400), executor stopped: liquidations are queued; E deposits
  before the executor comes back, so its liquidation is re-checked and skipped; D goes straight
  from ``ok`` to liquidation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.settings import Settings
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.cli.status import account_report
from marginwatch.client import publish_account_event
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, PositionSide
from marginwatch.runtime.celery_app import (
    actions_queue,
    make_celery,
    margin_calls_queue,
    queue_length,
)
from marginwatch.state import streams
from marginwatch.state.accounts import read_account, store_accounts
from marginwatch.state.applier import apply_pending, partition_lease
from marginwatch.state.connection import open_redis
from marginwatch.state.fund import credit_ledger, read_insurance_fund, read_ledgers
from tests.polling import wait_for
from tests.servers import RabbitMQ, RedisCluster, start_rabbitmq, start_redis_cluster

D = Decimal
CROSS, ISOLATED = MarginMode.CROSS, MarginMode.ISOLATED
PARTITIONS = 4
FEE_RATE = D("0.001")
FUND_START = D(1_000_000)


def btc(
    quantity: str,
    entry: str,
    leverage: int = 20,
    side: PositionSide = PositionSide.BOTH,
    wallet: str | None = None,
) -> Position:
    """A BTCUSDT position (isolated when ``wallet`` is given)."""
    mode = ISOLATED if wallet else CROSS
    return Position(
        "BTCUSDT", D(quantity), D(entry), leverage, mode, side, D(wallet) if wallet else None
    )


def eth(quantity: str, entry: str, leverage: int = 20, wallet: str | None = None) -> Position:
    """An ETHUSDT position (isolated when ``wallet`` is given)."""
    mode = ISOLATED if wallet else CROSS
    return Position(
        "ETHUSDT",
        D(quantity),
        D(entry),
        leverage,
        mode,
        isolated_wallet=(D(wallet) if wallet else None),
    )


HEDGE = PositionMode.HEDGE
BOOK = [
    # A: cross, BTC long offset by an ETH short. MM at S1 = 49,000×0.4% + 8×2,500×0.4% = 276.
    Account("A", D(1370), (btc("1", "50000"), eth("-8", "2500"))),
    # B: an isolated BTC long (40x) beside a healthy cross pool.
    Account("B", D(100_000), (btc("0.5", "50000", 40, wallet="630"), eth("1", "2500"))),
    # C: hedge mode, both BTC legs cross (one liquidation price).
    Account(
        "C",
        D(1320),
        (btc("2", "50000", 20, PositionSide.LONG), btc("-1", "50500", 20, PositionSide.SHORT)),
        HEDGE,
    ),
    # D: an isolated ETH long that only the ETH move of S3 liquidates, with margin left.
    Account("D", D(500), (eth("10", "2500", 25, wallet="1090"),)),
    # E: like A without the hedge; it deposits before its liquidation executes.
    Account("E", D(1265), (btc("1", "50000"),)),
    # Healthy accounts: nothing may happen to them.
    Account("H1", D(10_000), (btc("0.1", "50000"),)),
    Account("H2", D(5_000), (eth("-1", "2500", 10),)),
    Account(
        "H3",
        D(50_000),
        (btc("0.2", "50000", 10, PositionSide.LONG), btc("-0.1", "51000", 10, PositionSide.SHORT)),
        HEDGE,
    ),
]
STAGES = [
    {"BTCUSDT": "50000", "ETHUSDT": "2500"},
    {"BTCUSDT": "49000", "ETHUSDT": "2500"},
    {"BTCUSDT": "48950", "ETHUSDT": "2500"},
    {"BTCUSDT": "44000", "ETHUSDT": "2400"},
]


class Pipeline:
    """The daemons of one deployment, as subprocesses of ``python -m marginwatch``."""

    def __init__(self, state_url: str, broker_url: str, directory: Path) -> None:
        self.client = open_redis(state_url)
        self.app = make_celery(Settings(redis_url=state_url, partitions=PARTITIONS), broker_url)
        self.directory = directory
        self.env = {
            **os.environ,
            "MARGINWATCH_REDIS_URL": state_url,
            "MARGINWATCH_BROKER_URL": broker_url,
            "MARGINWATCH_PARTITIONS": str(PARTITIONS),
            "MARGINWATCH_LIQUIDATION_FEE_RATE": str(FEE_RATE),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.event_time_ms = time.time_ns() // 1_000_000 - 60_000  # recent, in order

    def start(self, name: str, *args: str) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "marginwatch", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)
        self.app.close()

    def replay(self, prices: dict[str, str]) -> int:
        """Publish one stage with the real producer; returns the newest tick sequence."""
        path = self.directory / f"stage-{self.event_time_ms}.jsonl"
        lines = []
        for symbol, price in prices.items():
            self.event_time_ms += 100
            lines.append(
                json.dumps(
                    {"symbol": symbol, "event_time": self.event_time_ms, "mark_price": price}
                )
            )
        path.write_text("\n".join(lines) + "\n")
        command = [
            sys.executable,
            "-m",
            "marginwatch",
            "producer",
            "--source",
            "replay",
            "--file",
            str(path),
            "--speed",
            "0",
        ]
        subprocess.run(command, env=self.env, check=True, timeout=60, capture_output=True)
        return int(self.client.get(keys.TICK_SEQUENCE) or 0)

    def evaluated(self, sequence: int) -> bool:
        """Whether every partition finished an evaluation that read tick ``sequence``."""
        marks = [self.client.get(keys.partition_evaluated(p)) for p in range(PARTITIONS)]
        return all(mark is not None and int(mark) >= sequence for mark in marks)

    def stream(self, name: streams.StreamName) -> list[dict[str, str]]:
        """Every entry of every partition's stream ``name``, oldest first."""
        return [fields for _id, fields in streams.read_all(self.client, name, PARTITIONS)]

    def events(self, kind: str) -> list[tuple[str, str]]:
        liquidation = kind in {"liquidation", "skipped"}
        stream = keys.liquidations if liquidation else keys.margin_call_events
        entries = self.stream(stream)
        return sorted((e["account_id"], e["pool"]) for e in entries if e["kind"] == kind)

    def queued(self, queue: Callable[[int], str]) -> int:
        """Messages waiting on every partition's queue of this kind."""
        return sum(queue_length(self.app, queue(p)) for p in range(PARTITIONS))


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = start_redis_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQ]:
    node = start_rabbitmq()
    yield node
    node.stop()


@pytest.fixture(params=["redis", "redis-cluster", "rabbitmq"])
def pipeline(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Pipeline]:
    """Accounts loaded, insurance fund seeded, executor and two partition workers running, on
    the servers of the parameter."""
    state, broker = redis_server.url, redis_server.url
    redis.Redis.from_url(redis_server.url).flushdb()
    if request.param == "redis-cluster":
        state = request.getfixturevalue("redis_cluster").url
    elif request.param == "rabbitmq":
        broker = request.getfixturevalue("rabbitmq").url
    running = Pipeline(state, broker, tmp_path)
    if request.param == "redis-cluster":  # each liquidation waits for its replica's copy
        running.env["MARGINWATCH_WAIT_REPLICAS"] = "1"
    store_accounts(running.client, BOOK, PARTITIONS)
    credit_ledger(running.client, 0, FUND_START)  # the fund starts in partition 0's ledger
    running.replay(STAGES[0])
    running.start("executor", "executor", "--loglevel", "WARNING")
    running.start("worker-a", "worker", "--partitions", "0-1", "--loglevel", "WARNING")
    running.start("worker-b", "worker", "--partitions", "2-3", "--loglevel", "WARNING")
    wait_for(
        lambda: running.evaluated(int(running.client.get(keys.TICK_SEQUENCE) or 0)),
        "the first evaluation of every partition",
    )
    yield running
    running.stop_all()


def status_of(client: redis.Redis, account_id: str) -> dict[str, Any]:
    """The account's report at the newest marks, as ``marginwatch status ACCOUNT`` prints it."""
    settings = Settings(redis_url="unused", partitions=PARTITIONS)
    report: dict[str, Any] = json.loads(account_report(client, settings, account_id))
    return report["accounts"][0]  # type: ignore[no-any-return]


def isolated_status(report: dict[str, Any]) -> str:
    return next(p["status"] for p in report["positions"] if p["margin_mode"] == "isolated")


def test_crash_takes_chosen_accounts_through_margin_call_to_liquidation(pipeline: Pipeline) -> None:
    """Warning, then one margin call each, then liquidations; a deposit rescues E."""
    client = pipeline.client
    wait_for(lambda: pipeline.evaluated(pipeline.replay(STAGES[1])), "stage 1 evaluated")
    for account in ("A", "C", "E"):
        assert status_of(client, account)["cross"]["status"] == "warning"
    assert isolated_status(status_of(client, "B")) == "warning"
    assert pipeline.events("margin_call") == []

    pipeline.replay(STAGES[2])
    called = [("A", "cross"), ("B", "isolated:BTCUSDT:BOTH"), ("C", "cross"), ("E", "cross")]
    wait_for(lambda: pipeline.events("margin_call") == called, "four margin calls")

    pipeline.stop("executor")
    wait_for(lambda: pipeline.evaluated(pipeline.replay(STAGES[3])), "stage 3 evaluated")
    assert pipeline.queued(margin_calls_queue) >= 1  # D's margin call
    assert pipeline.queued(actions_queue) >= 1  # messages of up to LIQUIDATION_BATCH each
    due = sum(client.zcard(keys.due_liquidations(p)) for p in range(PARTITIONS))
    assert due == 5  # liquidations of A, B, C, D, E
    deposit = {"type": "deposit", "account_id": "E", "amount": "10000", "event_id": "dep-1"}
    publish_account_event(client, deposit)
    home = partition_of("E", PARTITIONS)
    lease = partition_lease(client, home, "test", 10_000)
    wait_for(lease.keep, "the stopped executor's applier lease")
    applied = apply_pending(client, dict(default_tables()), PARTITIONS, lease, home, 10)
    assert applied.accepted == 1
    lease.release()
    pipeline.start("executor", "executor", "--loglevel", "WARNING")
    wait_for(lambda: len(pipeline.stream(keys.liquidations)) == 5, "four liquidations, one skip")
    wait_for(lambda: pipeline.queued(actions_queue) == 0, "the actions queues drained")

    d_pool = ("D", "isolated:ETHUSDT:BOTH")
    assert pipeline.events("margin_call") == [*called[:3], d_pool, called[3]]
    assert pipeline.events("liquidation") == [*called[:3], d_pool]
    skipped = [e for e in pipeline.stream(keys.liquidations) if e["kind"] == "skipped"]
    assert [(e["account_id"], e["reason"].split(":")[0]) for e in skipped] == [("E", "rescued")]
    assert_balances_to_the_cent(client)


def stored(client: redis.Redis, account_id: str) -> Account:
    """The account as Redis holds it now."""
    found = read_account(client, account_id, PARTITIONS)
    assert found is not None
    return found.account


def assert_balances_to_the_cent(client: redis.Redis) -> None:
    """Wallets, positions and the insurance fund after the liquidations, written out."""
    # A: BTC 1 × (44,000 − 50,000) + ETH −8 × (2,400 − 2,500) = −6,000 + 800; 1,370 − 5,200 < 0:
    # no fee can be charged, the fund covers 3,830 and the wallet is 0.
    assert stored(client, "A").cross_wallet_balance == 0
    assert stored(client, "A").positions == ()
    # B: 0.5 × (44,000 − 50,000) = −3,000 against an isolated wallet of 630: deficit 2,370.
    assert stored(client, "B").cross_wallet_balance == D(100_000)
    assert [p.symbol for p in stored(client, "B").positions] == ["ETHUSDT"]
    # C: 2 × (44,000 − 50,000) − 1 × (44,000 − 50,500) = −12,000 + 6,500; 1,320 − 5,500: −4,180.
    assert stored(client, "C").cross_wallet_balance == 0
    # D: 10 × (2,400 − 2,500) = −1,000; 1,090 − 1,000 = 90; fee 10 × 2,400 × 0.1% = 24;
    # 66 returns to the cross wallet.
    assert stored(client, "D").cross_wallet_balance == D(500) + D(66)
    assert stored(client, "D").positions == ()
    # E: rescued by its deposit, position intact.
    assert stored(client, "E").cross_wallet_balance == D(1265) + D(10_000)
    assert len(stored(client, "E").positions) == 1
    # The fund is the sum of the partitions' ledgers; each ledger moved by its own accounts only.
    fund = read_insurance_fund(client, PARTITIONS)
    assert fund == FUND_START - D(3830) - D(2370) - D(4180) + D(24)
    change = {"A": -D(3830), "B": -D(2370), "C": -D(4180), "D": D(24)}
    expected = {p: FUND_START if p == 0 else D(0) for p in range(PARTITIONS)}
    for account_id, amount in change.items():
        expected[partition_of(account_id, PARTITIONS)] += amount
    assert read_ledgers(client, range(PARTITIONS)) == expected
    for healthy in ("H1", "H2", "H3"):
        assert stored(client, healthy) == next(a for a in BOOK if a.account_id == healthy)
        version = client.hget(keys.account(partition_of(healthy, PARTITIONS), healthy), "version")
        assert version == b"1"  # never written again

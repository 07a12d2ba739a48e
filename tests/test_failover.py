"""Fail-over by partition: two executors on one partition range, two appliers on one lease.

Real daemons (``python -m marginwatch``) on a real redis-server; one of each pair is killed
with SIGKILL in the middle of the work. Nothing may be lost or done twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.client import publish_account_event
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import executor_queues
from marginwatch.state import streams
from marginwatch.state.accounts import read_account, store_accounts
from marginwatch.state.fund import credit_ledger, read_ledgers
from tests.daemons import Daemons
from tests.polling import wait_for

D = Decimal
P = 2
FUND = D(1_000_000)
# 1 BTC long from 50,000 at 20x with 1,265: at 48,000 the margin balance is 1,265 − 2,000.
DEFICIT = D(2_000) - D(1_265)


@pytest.fixture
def daemons(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[Daemons]:
    env = {"MARGINWATCH_REDIS_URL": redis_server.url, "MARGINWATCH_PARTITIONS": str(P),
           # A killed executor's message is redelivered after this, not after 6 min.
           "MARGINWATCH_VISIBILITY_TIMEOUT_SECONDS": "4"}  # fmt: skip
    running = Daemons(env, tmp_path)
    yield running
    running.stop_all()


def ids_in(partition: int, count: int, prefix: str) -> list[str]:
    """``count`` account ids of ``partition``."""
    found = (f"{prefix}{n}" for n in range(10 * count + 100))
    return [a for a in found if partition_of(a, P) == partition][:count]


def publish_btc(client: redis.Redis, price: str) -> None:
    Publisher(client).publish([Tick("BTCUSDT", D(price), time.time_ns() // 1_000_000)])


def backlog(client: redis.Redis, done: list[tuple[str, str]]) -> str:
    """What is left, for a failure message."""
    queues = {q: client.llen(q) for p in range(P) for q in executor_queues([p])}
    return (f"every liquidation: {len(done)} done; queues {queues}; unacked "
            f"{client.hlen('unacked')}; leases {executor_pids(client)}")  # fmt: skip


def drained(client: redis.Redis) -> bool:
    """No action queued, none taken and unacknowledged: nothing more can be delivered."""
    queued = sum(client.llen(q) for q in executor_queues(range(P)))
    return queued == 0 and client.hlen("unacked") == 0


def executor_pids(client: redis.Redis) -> set[int]:
    """Pids of the executors that hold an applier lease."""
    values = [client.get(keys.applier_lease(p)) for p in range(P)]
    return {int(v.decode().rsplit("-", 1)[1]) for v in values if v}


def test_two_executors_on_one_range_one_killed_mid_run(
    daemons: Daemons, redis_client: redis.Redis
) -> None:
    """200 bankrupt accounts over both partitions, executed by a pair; one is killed after
    some liquidations: every pool is liquidated once, every margin call sent once, each
    partition's ledger moves by its own deficits, and the survivor applies the events."""
    accounts = ids_in(0, 100, "a") + ids_in(1, 100, "a")
    position = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS)
    store_accounts(redis_client, [Account(a, D(1265), (position,)) for a in accounts], P)
    healthy = ids_in(0, 2, "h") + ids_in(1, 2, "h")
    store_accounts(redis_client, [Account(h, D(100_000)) for h in healthy], P)
    credit_ledger(redis_client, 0, FUND)
    publish_btc(redis_client, "50000")
    first = daemons.start("executor-a", "executor", "--partitions", "0-1", "--queues", "actions")
    daemons.start("executor-b", "executor", "--partitions", "0-1", "--queues", "actions")
    daemons.start("worker", "worker", "--partitions", "0-1")
    wait_for(lambda: all(redis_client.get(keys.partition_evaluated(p)) for p in range(P)),
             "the first evaluations")  # fmt: skip
    publish_btc(redis_client, "48000")

    def liquidated() -> list[tuple[str, str]]:
        entries = streams.read_all(redis_client, keys.liquidations, P)
        return [(e["account_id"], e["pool"]) for _id, e in entries if e["kind"] == "liquidation"]

    wait_for(lambda: len(liquidated()) >= 20, "the first liquidations", timeout=60)
    killed_at = time.monotonic()
    daemons.kill_pid(first.pid)
    for h in healthy:
        publish_account_event(redis_client, {"type": "deposit", "account_id": h, "amount": "1",
                                             "event_id": f"dep-{h}"})  # fmt: skip
    left = lambda: backlog(redis_client, liquidated())  # noqa: E731 (a failure message)
    wait_for(lambda: len(liquidated()) >= len(accounts), left, timeout=90)
    wait_for(lambda: all(read_account(redis_client, h, P).version == 2 for h in healthy),  # type: ignore[union-attr]
             "the deposits applied by the survivor", timeout=60)  # fmt: skip
    print(f"all liquidated {time.monotonic() - killed_at:.1f} s after the kill")
    assert daemons.alive()
    assert Counter(liquidated()) == Counter((a, "cross") for a in accounts)

    # Two executors work at once, so a pool may be liquidated by one while its margin call
    # waits in the other's batch (or in a redelivery): that margin call finds no open pool and
    # is not sent. No pool is called twice, none after its liquidation.
    def calls() -> list[tuple[str, str]]:
        entries = streams.read_all(redis_client, keys.margin_call_events, P)
        return [(e["account_id"], e["kind"]) for _id, e in entries]

    wait_for(lambda: drained(redis_client), lambda: backlog(redis_client, liquidated()))
    called = Counter(calls())
    assert set(called) <= {(a, "margin_call") for a in accounts}
    assert max(called.values(), default=1) == 1
    print(f"margin calls: {len(called)} of {len(accounts)} pools (the rest liquidated first)")
    assert Counter(liquidated()) == Counter((a, "cross") for a in accounts)
    ledgers = read_ledgers(redis_client, range(P))
    assert ledgers == {0: FUND - 100 * DEFICIT, 1: -100 * DEFICIT}
    for h in healthy:
        stored = read_account(redis_client, h, P)
        assert stored is not None
        assert stored.account.cross_wallet_balance == D(100_001)


def test_two_appliers_race_for_a_partition_and_order_is_kept(
    daemons: Daemons, redis_client: redis.Redis
) -> None:
    """Alternating deposits and withdrawals of 1 on empty wallets (a withdrawal before its
    deposit would be refused): the lease holder is killed part way; the other takes over and
    every event is applied once, in order, none dead-lettered."""
    accounts = ids_in(0, 3, "o")
    store_accounts(redis_client, [Account(a, D(0)) for a in accounts], P)
    daemons.start("executor-a", "executor", "--partitions", "0", "--queues", "actions")
    daemons.start("executor-b", "executor", "--partitions", "0", "--queues", "actions")
    rounds = 150
    kinds = ("deposit", "withdraw")
    events = [{"type": kind, "account_id": a, "amount": "1"}
              for _round in range(rounds) for kind in kinds for a in accounts]  # fmt: skip

    def versions() -> int:
        return sum(read_account(redis_client, a, P).version - 1 for a in accounts)  # type: ignore[union-attr]

    def feed() -> None:  # at most 60 events ahead of the applier, so a kill lands mid-stream
        for number, event in enumerate(events):
            publish_account_event(redis_client, event, P)
            if number % 30 == 29:
                wait_for(lambda n=number: n + 1 - versions() <= 60, "the applier to follow",
                         timeout=60, interval=0.02)  # fmt: skip

    feeder = threading.Thread(target=feed)
    feeder.start()

    holder = wait_for(lambda: versions() >= len(events) // 4 and executor_pids(redis_client),
                      "a quarter of the events applied")  # fmt: skip
    (pid,) = holder
    daemons.kill_pid(pid)
    feeder.join()
    wait_for(lambda: versions() == len(events), "every event applied", timeout=60)
    survivor = executor_pids(redis_client)
    assert survivor
    assert survivor != {pid}
    assert daemons.alive()
    assert streams.read_all(redis_client, keys.dead_letters, P) == []
    for a in accounts:
        stored = read_account(redis_client, a, P)
        assert stored is not None
        assert (stored.version, stored.account.cross_wallet_balance) == (1 + 2 * rounds, 0)
    entries = redis_client.xrange(keys.account_events(0))
    assert [json.loads(f[b"event"]) for _id, f in entries] == events

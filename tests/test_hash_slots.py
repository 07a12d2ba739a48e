"""Every multi-key operation touches one hash slot: the real code against a Redis Cluster node.

The node runs with ``--cluster-enabled yes`` and owns every slot, so a plain client reaches all
keys, and the server itself refuses (``CROSSSLOT``) any script, transaction or multi-key command
whose keys lie in different slots. The scenario drives every writer of the state: loading
accounts, the producer's script, the applier (leases, events, dead letters), the dispatcher,
evaluations and their progress, margin calls, resolutions, liquidations with the ledgers,
``status`` and the client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from marginwatch.base import keys
from marginwatch.base.actions import ActionKind
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, start_redis_server
from marginwatch.cli.status import account_report, overview
from marginwatch.client import publish_account_event
from marginwatch.engine import batch
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.executor.liquidation import liquidate
from marginwatch.executor.margin_calls import execute_margin_calls, execute_resolution
from marginwatch.producer.publisher import Publisher
from marginwatch.state import streams
from marginwatch.state.accounts import store_accounts
from marginwatch.state.applier import apply_pending, partition_lease, reclaim_pending
from marginwatch.state.fund import credit_ledger, read_insurance_fund
from marginwatch.worker.dispatch import Dispatcher
from marginwatch.worker.evaluation import evaluate_partition, finish_evaluation, record_due
from marginwatch.worker.partition import PartitionBook
from tests.polling import wait_for
from tests.servers import port_with_a_free_bus

D = Decimal
P = 4
TABLES = dict(default_tables())
SETTINGS = Settings(redis_url="unused", partitions=P)
BOOK = [
    Account(name, D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))
    for name in ("E", "F", "G", "K")
] + [
    Account("I", D(100), (Position("BTCUSDT", D("0.5"), D(50_000), 40, MarginMode.ISOLATED,
                                   isolated_wallet=D(1000)),)),
    Account("H", D(10_000), (Position("ETHUSDT", D("0.1"), D(2_500), 10, MarginMode.CROSS),)),
]  # fmt: skip


def cluster_state(client: redis.Redis) -> str:
    info: Any = client.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state"))
    text = info.decode() if isinstance(info, bytes) else str(info)
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if "state" in line)


@pytest.fixture(scope="module")
def cluster_node() -> Iterator[RedisServer]:
    """A private one-node Redis Cluster owning all 16,384 slots."""
    node = start_redis_server(
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
        port=port_with_a_free_bus(),
    )
    client = redis.Redis.from_url(node.url)
    client.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
    wait_for(lambda: cluster_state(client) == "ok", "the one-node cluster to be ok", timeout=20)
    client.close()
    yield node
    node.stop()


@pytest.fixture
def node(cluster_node: RedisServer) -> Iterator[redis.Redis]:
    """A client on the emptied cluster node."""
    client = redis.Redis.from_url(cluster_node.url)
    client.flushall()
    yield client
    client.close()


def publish(client: redis.Redis, **marks: str) -> None:
    now = time.time_ns() // 1_000_000
    Publisher(client).publish([Tick(s, D(p), now) for s, p in marks.items()])


def evaluate_all(client: redis.Redis, books: dict[int, PartitionBook]) -> list[Any]:
    """One evaluation of every partition, progress recorded; the actions found."""
    found = []
    for book in books.values():
        outcome = evaluate_partition(book, client, SETTINGS)
        record_due(client, book, outcome)
        finish_evaluation(client, book, outcome)
        found += outcome.actions
    return found


def apply_events(client: redis.Redis) -> int:
    """Every partition's events applied under a lease; how many were handled."""
    handled = 0
    for partition in range(P):
        lease = partition_lease(client, partition, "slots", 10_000)
        assert lease.keep()
        reclaim_pending(client, partition, "slots")
        handled += apply_pending(client, TABLES, P, lease, partition).total
        lease.release()
    return handled


def test_the_node_refuses_what_spans_slots(node: redis.Redis) -> None:
    """The check is real: keys of two partitions in one MGET or one transaction are refused."""
    with pytest.raises(redis.ResponseError, match="don't hash to the same slot"):
        node.mget(keys.account(0, "a"), keys.account(1, "b"))
    pipe = node.pipeline(transaction=True)
    pipe.set(keys.insurance_fund(0), "1")
    pipe.set(keys.insurance_fund(1), "1")
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        pipe.execute()


def test_every_key_of_a_partition_shares_its_slot() -> None:
    """The key functions of one partition give one slot; the three price keys share theirs."""
    for partition in range(64):
        names = [
            keys.account(partition, "alice"), keys.partition_members(partition),
            keys.partition_changes(partition), keys.partition_pending(partition),
            keys.partition_status(partition), keys.partition_evaluated(partition),
            keys.account_events(partition), keys.dead_letters(partition),
            keys.applier_lease(partition), keys.applier_fence(partition),
            keys.margin_call_events(partition), keys.liquidations(partition),
            keys.insurance_fund(partition), keys.episode(partition, "alice", "cross"),
            keys.idempotency(partition, "event:1"), keys.adl_sketches(partition),
        ]  # fmt: skip
        assert len({key_slot(name.encode()) for name in names}) == 1, partition
    prices = (keys.PRICES, keys.TICK_SEQUENCE, keys.TICKS)
    assert len({key_slot(name.encode()) for name in prices}) == 1


def test_the_whole_flow_runs_on_a_cluster_node(node: redis.Redis) -> None:
    """Load, tick, apply events, dispatch, evaluate, margin-call, resolve, liquidate, report:
    no operation is refused, and each did its work."""
    store_accounts(node, BOOK, P)
    credit_ledger(node, 0, D(1_000_000))
    publish(node, BTCUSDT="50000", ETHUSDT="2500")
    publish_account_event(node, {"type": "deposit", "account_id": "H", "amount": "5",
                                 "event_id": "d-1"})  # fmt: skip
    node.xadd(keys.account_events(0), {"event": "{not json"})
    assert apply_events(node) == 2
    enqueued: list[int] = []
    dispatcher = Dispatcher(node, range(P), enqueued.append)
    dispatcher.start_from_now()
    dispatcher.clear_pending()
    node.xadd(keys.partition_changes(2), {"account": "x", "version": 9})
    assert dispatcher.dispatch_once(block_ms=None) == 1
    brackets = batch.BracketArrays.from_tables(TABLES, sorted(TABLES))
    books = {p: PartitionBook(p, brackets, TABLES) for p in range(P)}
    for book in books.values():
        book.load(node)
    publish(node, BTCUSDT="48950")  # E, F, G, K: 195.8 / 215, margin call
    calls = evaluate_all(node, books)
    assert {a.kind for a in calls} == {ActionKind.MARGIN_CALL}
    node.delete(keys.partition_pending(2))  # its evaluation started
    assert dispatcher.dispatch_once(block_ms=None) == P
    results = execute_margin_calls(node, TABLES, SETTINGS, calls)
    assert results == ["sent"] * len(calls) == ["sent"] * 4
    publish(node, BTCUSDT="52000")  # recovered: below the re-arm level
    resolutions = [
        a for a in evaluate_all(node, books) if a.kind is ActionKind.MARGIN_CALL_RESOLVED
    ]
    assert [execute_resolution(node, TABLES, SETTINGS, a) for a in resolutions] == ["sent"] * 4
    publish(node, BTCUSDT="48000")  # E, F, G, K bankrupt; I's isolated pool too
    due = [a for a in evaluate_all(node, books) if a.kind is ActionKind.LIQUIDATION]
    assert {a.account_id for a in due} == {"E", "F", "G", "K", "I"}
    assert {liquidate(node, TABLES, SETTINGS, a).result for a in due} == {"liquidated"}
    # Each of E, F, G, K: 1,265 − 2,000 leaves 735 for the fund; I: 1,000 − 1,000 = 0 left,
    # no fee taken; the ledgers sum to the fund.
    assert read_insurance_fund(node, P) == D(1_000_000) - 4 * D(735) - D(0)
    kinds = [e["kind"] for _id, e in streams.read_all(node, keys.margin_call_events, P)]
    assert sorted(kinds) == ["margin_call"] * 4 + ["resolved"] * 4
    assert "insurance fund" in overview(node, P)
    report = json.loads(account_report(node, SETTINGS, "H"))
    assert report["accounts"][0]["cross"]["wallet_balance"] == "10005"

"""Liquidations in batches against real Redis: one guarded write per account, the ledger
chained exactly, conflicts decided again, the same end state as one at a time."""

from __future__ import annotations

from decimal import Decimal

import redis

from marginwatch.base import keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.partitions import partition_of
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.executor.liquidation import (
    liquidate,
    liquidate_batch,
    plan_batch,
    read_batch,
)
from marginwatch.executor.tasks import ExecutorRuntime, run_liquidations
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import make_celery
from marginwatch.state.accounts import read_account, store_accounts
from marginwatch.state.due import due_actions, queue_due
from marginwatch.state.guarded import Guard, GuardedWrite

D = Decimal
PARTITIONS = 2
SETTINGS = Settings(redis_url="unused", partitions=PARTITIONS, liquidation_fee_rate=D("0.001"))
TABLES = dict(default_tables())
BTC = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS)
ETH = Position("ETHUSDT", D(-10), D(2_000), 10, MarginMode.ISOLATED, isolated_wallet=D(150))
# At BTC 48,700 and ETH 2,020: A's cross pool MB = 1,265 − 1,300 < 0 and its isolated ETH short
# MB = 150 − 200 < 0; B (wallet 1,400) has MB 100 < MM 194.8; C (wallet 5,000) is rescued.
BOOK = (
    Account("A", D(1265), (BTC, ETH)),
    Account("B", D(1400), (BTC,)),
    Account("C", D(5000), (BTC,)),
)


def action(account_id: str, pool: str = "cross", version: int = 1) -> Action:
    partition = partition_of(account_id, PARTITIONS)
    return Action(ActionKind.LIQUIDATION, partition, account_id, pool, version, 7, 1)


BATCH = [action("A"), action("A", "isolated:ETHUSDT:BOTH"), action("B"), action("C"), action("B")]


def prepare(client: redis.Redis) -> None:
    store_accounts(client, BOOK, PARTITIONS)
    for partition in range(PARTITIONS):
        client.set(keys.insurance_fund(partition), "1000")
    Publisher(client).publish([Tick("BTCUSDT", D(48_700), 1), Tick("ETHUSDT", D(2_020), 1)])


def state(client: redis.Redis) -> tuple[object, ...]:
    """Every account (version, state), every ledger, and the audit stream's kinds."""
    accounts = [read_account(client, a.account_id, PARTITIONS) for a in BOOK]
    ledgers = [client.get(keys.insurance_fund(p)) for p in range(PARTITIONS)]
    audit = [
        sorted(
            f[b"kind"] + f[b"account_id"] + f[b"pool"]
            for _id, f in client.xrange(keys.liquidations(p))
        )
        for p in range(PARTITIONS)
    ]
    return accounts, ledgers, audit


def test_a_batch_liquidates_each_pool_once_with_one_write_per_account(
    redis_client: redis.Redis,
) -> None:
    """A's two pools in one write (version 2), B once (its copy a duplicate), C rescued; the
    ledgers move by each liquidation's fee or deficit, exactly."""
    prepare(redis_client)
    results = [o.result for o in liquidate_batch(redis_client, TABLES, SETTINGS, BATCH)]
    assert results == ["liquidated", "liquidated", "liquidated", "skipped", "duplicate"]
    a = read_account(redis_client, "A", PARTITIONS)
    assert a is not None
    assert (a.version, a.account.positions, a.account.cross_wallet_balance) == (2, (), D(0))
    # A cross: 1,265 − 1,300 = −35 (deficit 35); A ETH: 150 − 200 = −50 (deficit 50);
    # B: 1,400 − 1,300 = 100, fee 48.7 (the fund gains it).
    ledger = {partition_of(a, PARTITIONS): D(1000) for a in "ABC"}
    ledger[partition_of("A", PARTITIONS)] -= D(85)
    ledger[partition_of("B", PARTITIONS)] += D("48.7")
    for partition, expected in ledger.items():
        assert D(redis_client.get(keys.insurance_fund(partition)).decode()) == expected
    changes = [redis_client.xlen(keys.partition_changes(p)) for p in range(PARTITIONS)]
    assert sum(changes) == len(BOOK) + 2  # the load's, then one per liquidated account


def test_a_batch_ends_in_the_state_one_action_at_a_time_does(redis_server) -> None:
    """The same actions one by one, on a second database: the same accounts and ledgers."""
    batched = redis.Redis(port=redis_server.port, db=1)
    single = redis.Redis(port=redis_server.port, db=2)
    for client in (batched, single):
        prepare(client)
    liquidate_batch(batched, TABLES, SETTINGS, BATCH)
    for one in BATCH:
        liquidate(single, TABLES, SETTINGS, one)
    (accounts_b, ledgers_b, audit_b), (accounts_s, ledgers_s, audit_s) = (
        state(batched),
        state(single),
    )
    assert ledgers_b == ledgers_s
    assert audit_b == audit_s
    assert [s.account for s in accounts_b] == [s.account for s in accounts_s]  # type: ignore[union-attr]


def test_a_write_whose_account_changed_since_it_was_read_is_decided_again(
    redis_client: redis.Redis,
) -> None:
    """Read, then a deposit rescues B before the write: its guarded write does nothing, and
    the next round finds B rescued."""
    prepare(redis_client)
    b = action("B")
    read = read_batch(redis_client, [b], None)
    (plan,) = plan_batch([0], [b], read, TABLES, SETTINGS)
    store_accounts(redis_client, [Account("B", D(20_000), (BTC,))], PARTITIONS)  # version 2
    pipe = redis_client.pipeline(transaction=False)
    plan.write.queue(pipe)
    assert pipe.execute() == [0]
    assert redis_client.get(keys.insurance_fund(b.partition)) == b"1000"
    assert [o.result for o in liquidate_batch(redis_client, TABLES, SETTINGS, [b])] == ["skipped"]


def test_guarded_commands_run_only_when_every_guard_holds(redis_client: redis.Redis) -> None:
    """A value, a hash field and an absent key guard the writes; one mismatch: nothing."""
    redis_client.set("k", "1")
    redis_client.hset("h", "version", "3")
    guards = [Guard("k", "1"), Guard("h", "3", "version"), Guard("absent", None)]
    write = GuardedWrite(guards)
    write.recorder.pipe.set("out", "written", ex=60)
    write.recorder.pipe.xadd("stream", {"a": 1}, maxlen=10, approximate=True)
    mismatched = GuardedWrite([*guards[:2], Guard("k", "2")])
    mismatched.recorder.pipe.set("other", "written")
    pipe = redis_client.pipeline(transaction=False)
    write.queue(pipe)
    mismatched.queue(pipe)
    assert pipe.execute() == [1, 0]
    assert (redis_client.get("out"), redis_client.xlen("stream")) == (b"written", 1)
    assert 0 < redis_client.ttl("out") <= 60
    assert redis_client.get("other") is None


def test_a_liquidated_pool_is_not_liquidated_twice_across_batches(
    redis_client: redis.Redis,
) -> None:
    """The batch again (a redelivery): every action a duplicate, nothing written."""
    prepare(redis_client)
    liquidate_batch(redis_client, TABLES, SETTINGS, BATCH)
    before = state(redis_client)
    again = [o.result for o in liquidate_batch(redis_client, TABLES, SETTINGS, BATCH)]
    assert again == ["duplicate"] * len(BATCH)
    assert state(redis_client) == before


def test_one_message_executes_every_liquidation_due_in_its_partition(
    redis_server, redis_client: redis.Redis
) -> None:
    """Every action of BATCH recorded as due; a message carrying only B's: A's two pools and C
    (rescued) are done too, the due set emptied; their own messages later are duplicates."""
    prepare(redis_client)
    settings = SETTINGS.model_copy(update={"redis_url": redis_server.url})
    runtime = ExecutorRuntime(
        settings, redis_client, TABLES, make_celery(settings, redis_server.url)
    )
    pipe = redis_client.pipeline(transaction=True)
    queue_due(pipe, 1, BATCH, 1_700_000_000_000)  # A, B and C are all in partition 1
    pipe.execute()
    assert run_liquidations(runtime, [action("B")]) == ["liquidated"]
    assert redis_client.zcard(keys.due_liquidations(1)) == 0
    assert redis_client.hlen(keys.due_liquidation_actions(1)) == 0
    kinds = sorted(
        f[b"kind"] + f[b"account_id"] for _id, f in redis_client.xrange(keys.liquidations(1))
    )
    assert kinds == [b"liquidationA", b"liquidationA", b"liquidationB", b"skippedC"]
    assert run_liquidations(runtime, BATCH[:4]) == ["duplicate"] * 4


def test_an_executor_takes_the_oldest_due_liquidations_up_to_its_limit(
    redis_client: redis.Redis,
) -> None:
    """Three due at three moments: a limit of two reads the two oldest, whatever else is due."""
    for when, account_id in ((3, "C"), (1, "A"), (2, "B")):
        pipe = redis_client.pipeline(transaction=True)
        queue_due(pipe, 1, [action(account_id)], when)
        pipe.execute()
    taken = due_actions(redis_client, 1, 2)
    assert [message["account_id"] for message in taken] == ["A", "B"]  # type: ignore[index]

"""``marginwatch migrate`` on a Redis filled in the layout without partition tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from decimal import Decimal
from typing import Any

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.state import streams
from marginwatch.state.accounts import account_to_json, read_account
from marginwatch.state.applier import run_applier
from marginwatch.state.fund import read_insurance_fund, read_ledgers

D = Decimal
P = 4
BTC = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS)
ISOLATED = Position("BTCUSDT", D("0.5"), D(50_000), 40, MarginMode.ISOLATED,
                    isolated_wallet=D(630))  # fmt: skip
# "a:b" holds a colon: keys that embed an account id must still be split right.
ACCOUNTS = {"alice": Account("alice", D(1310), (BTC,)), "bob": Account("bob", D(500), (ISOLATED,)),
            "a:b": Account("a:b", D(77))}  # fmt: skip
VERSIONS = {"alice": 3, "bob": 2, "a:b": 2}
DAY_MS = 24 * 3600 * 1000


def deposit(account_id: str, amount: str, event_id: str | None = None) -> dict[str, str]:
    event = {"type": "deposit", "account_id": account_id, "amount": amount}
    return {**event, "event_id": event_id} if event_id else event


def fill_legacy(client: redis.Redis) -> dict[str, Any]:
    """The keys the layout without partition tags wrote, as its code wrote them."""
    client.set(keys.PARTITION_COUNT, P)
    for account_id, account in ACCOUNTS.items():
        partition = partition_of(account_id, P)
        state = {"version": VERSIONS[account_id], "state": account_to_json(account)}
        client.hset(f"mw:account:{account_id}", mapping=state)
        client.sadd(f"mw:partition:{partition}:accounts", account_id)
        client.xadd(f"mw:partition:{partition}:changes",
                    {"account": account_id, "version": VERSIONS[account_id]})  # fmt: skip
        client.set(f"mw:partition:{partition}:evaluated", 41)
        client.set(f"mw:partition:{partition}:pending", 1, ex=30)
        client.zadd(f"mw:partition:{partition}:status", {f"{account_id}|cross": 0.5})
    tick = {"s": "BTCUSDT", "p": "49000", "E": 1_700_000_000_000, "seq": 41}
    client.hset("mw:prices", "BTCUSDT", json.dumps(tick))
    client.set("mw:prices:seq", 41)
    client.xadd("mw:ticks", {"s": "BTCUSDT", "p": "49000", "E": 1_700_000_000_000, "seq": 41})
    # Account events: two applied (delivered and acknowledged), one delivered to an applier that
    # died before applying it (pending), two new, one unreadable and new.
    stream = "mw:account-events"
    applied = [client.xadd(stream, {"event": json.dumps(deposit("alice", "5", "dep-1"))}),
               client.xadd(stream, {"event": json.dumps(deposit("bob", "5"))})]  # fmt: skip
    client.xgroup_create(stream, keys.ACCOUNT_EVENTS_GROUP, id="0")
    client.xreadgroup(keys.ACCOUNT_EVENTS_GROUP, "old-applier", {stream: ">"}, count=2)
    client.xack(stream, keys.ACCOUNT_EVENTS_GROUP, *applied)
    left = [client.xadd(stream, {"event": json.dumps(deposit("alice", "100"))})]
    client.xreadgroup(keys.ACCOUNT_EVENTS_GROUP, "old-applier", {stream: ">"}, count=1)
    left += [client.xadd(stream, {"event": json.dumps(deposit("bob", "20", "dep-2"))}),
             client.xadd(stream, {"event": json.dumps(deposit("a:b", "3"))}),
             client.xadd(stream, {"event": "{not json"})]  # fmt: skip
    letter = {"event": json.dumps(deposit("bob", "x")), "reason": "amount: not a number",
              "stream_id": "1-0"}  # fmt: skip
    client.xadd("mw:account-events:dead", letter)
    calls = [client.xadd("mw:margin-calls", {"kind": "margin_call", "account_id": name,
                                             "pool": "cross", "margin_ratio": "0.9"})
             for name in ("alice", "bob", "a:b")]  # fmt: skip
    liquidations = [client.xadd("mw:liquidations", {"kind": "liquidation", "account_id": "bob",
                                                    "pool": "isolated:BTCUSDT:BOTH"})]  # fmt: skip
    client.set("mw:episode:alice:cross", 41, ex=30 * 24 * 3600)
    client.set("mw:episode:a:b:isolated:BTCUSDT:BOTH", 40, ex=30 * 24 * 3600)
    client.set("mw:done:liquidation:bob:isolated:BTCUSDT:BOTH:1", 1, px=DAY_MS)  # v1 -> v2
    client.set("mw:done:liquidation:alice:cross:3", 1, px=DAY_MS)  # a skip at the current v3
    client.set("mw:done:event:dep-1", "accepted", px=DAY_MS)  # its event is still in the stream
    client.set("mw:done:event:gone-1", "rejected", px=DAY_MS)  # its event was trimmed away
    client.set("mw:insurance-fund", "1000000.5")
    client.set("mw:lock:alice", 1)
    return {"left": [i.decode() for i in left], "calls": [i.decode() for i in calls],
            "liquidations": [i.decode() for i in liquidations]}  # fmt: skip


def migrate(server: RedisServer) -> subprocess.CompletedProcess[str]:
    """``marginwatch migrate`` as an operator runs it."""
    env = {**os.environ, "MARGINWATCH_REDIS_URL": server.url, "MARGINWATCH_PARTITIONS": str(P)}
    return subprocess.run([sys.executable, "-m", "marginwatch", "migrate"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.fixture
def migrated(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, Any]:
    """The legacy layout, then ``marginwatch migrate``; the stream ids written before."""
    ids = fill_legacy(redis_client)
    result = migrate(redis_server)
    assert result.returncode == 0, result.stderr
    assert "accounts: 3" in result.stdout
    assert "conflict" not in result.stdout
    return ids


def test_no_legacy_key_is_left_and_every_account_arrives(
    migrated: dict[str, Any], redis_client: redis.Redis
) -> None:
    """Accounts with their versions, members, progress; pending flags dropped; prices moved."""
    legacy = [k for k in redis_client.keys("mw:*") if b"{" not in k]
    assert sorted(legacy) == [keys.PARTITION_COUNT.encode(), keys.MIGRATED_ACCOUNT_EVENTS.encode()]
    for account_id, account in ACCOUNTS.items():
        stored = read_account(redis_client, account_id, P)
        assert stored is not None
        assert (stored.version, stored.account) == (VERSIONS[account_id], account)
        home = partition_of(account_id, P)
        assert redis_client.sismember(keys.partition_members(home), account_id)
        assert redis_client.get(keys.partition_evaluated(home)) == b"41"
        assert not redis_client.exists(keys.partition_pending(home))
    assert redis_client.get(keys.TICK_SEQUENCE) == b"41"
    assert redis_client.hget(keys.PRICES, "BTCUSDT") is not None


def test_episodes_and_idempotency_keys_keep_their_values_and_ttls(
    migrated: dict[str, Any], redis_client: redis.Redis
) -> None:
    """Under the account's partition; an event's key where its account lives, or everywhere
    when the old stream no longer names it."""
    alice, ab, bob = (partition_of(a, P) for a in ("alice", "a:b", "bob"))
    assert 0 < redis_client.ttl(keys.episode(alice, "alice", "cross")) <= 30 * 24 * 3600
    assert redis_client.get(keys.episode(ab, "a:b", "isolated:BTCUSDT:BOTH")) == b"40"
    assert redis_client.sismember(keys.partition_episodes(alice), "alice|cross")
    assert redis_client.sismember(keys.partition_episodes(ab), "a:b|isolated:BTCUSDT:BOTH")
    done = keys.idempotency(bob, "liquidation:bob:isolated:BTCUSDT:BOTH:1")
    assert 0 < redis_client.pttl(done) <= DAY_MS
    found = [redis_client.get(keys.idempotency(p, "event:dep-1")) for p in range(P)]
    assert found == [b"accepted" if p == alice else None for p in range(P)]
    gone = [redis_client.get(keys.idempotency(p, "event:gone-1")) for p in range(P)]
    assert gone == [b"rejected"] * P
    # The old layout wrote a liquidation's key for a skip too: dropped, so it cannot block.
    assert not redis_client.exists(keys.idempotency(alice, "liquidation:alice:cross:3"))


def test_output_streams_are_split_keeping_their_ids(
    migrated: dict[str, Any], redis_client: redis.Redis
) -> None:
    """Margin calls, liquidations and dead letters, each in its account's partition."""
    calls = streams.read_all(redis_client, keys.margin_call_events, P)
    assert [i for i, _fields in calls] == migrated["calls"]
    for entry_id, fields in calls:
        home = partition_of(fields["account_id"], P)
        assert redis_client.xrange(keys.margin_call_events(home), min=entry_id, max=entry_id)
    liquidations = streams.read_all(redis_client, keys.liquidations, P)
    assert [i for i, _fields in liquidations] == migrated["liquidations"]
    (dead,) = streams.read_all(redis_client, keys.dead_letters, P)
    assert dead[1]["reason"] == "amount: not a number"
    assert redis_client.xrange(keys.dead_letters(partition_of("bob", P)))


def test_the_fund_is_credited_to_a_ledger(
    migrated: dict[str, Any], redis_client: redis.Redis
) -> None:
    """The fund (the sum of the ledgers) is what it was, in partition 0's ledger."""
    assert read_insurance_fund(redis_client, P) == D("1000000.5")
    assert read_ledgers(redis_client, range(P))[0] == D("1000000.5")


def test_events_not_yet_applied_are_applied_once_afterwards(
    migrated: dict[str, Any], redis_client: redis.Redis
) -> None:
    """The pending and the new entries move with their ids; applied ones stay applied."""
    moved = streams.read_all(redis_client, keys.account_events, P)
    assert [i for i, _fields in moved] == migrated["left"]
    assert redis_client.xlen(keys.MIGRATED_ACCOUNT_EVENTS) == 6
    stop = threading.Event()
    handled: list[int] = []

    def on_step(counts: Any) -> None:
        handled.append(counts.total)
        if sum(handled) >= 4:
            stop.set()

    run_applier(redis_client, dict(default_tables()), P, range(P), "new-applier", stop,
                idle_wait_ms=10, on_step=on_step)  # fmt: skip
    wallets = {a: wallet(redis_client, a) for a in ACCOUNTS}
    # The applied deposits (alice +5, bob +5) are already in the stored wallets: not again.
    assert wallets == {"alice": D(1310) + D(100), "bob": D(500) + D(20), "a:b": D(77) + D(3)}
    (_id, letter) = streams.newest(redis_client, keys.dead_letters, P, 1)[0]
    assert letter["reason"].startswith("event: not valid JSON")


def test_a_second_run_moves_nothing(migrated: dict[str, Any], redis_server: RedisServer) -> None:
    """Running it again is harmless."""
    again = migrate(redis_server)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "nothing to move\n"


def wallet(client: redis.Redis, account_id: str) -> Decimal:
    stored = read_account(client, account_id, P)
    assert stored is not None
    return stored.account.cross_wallet_balance


def test_migrate_refuses_while_old_actions_are_queued(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """An old liquidation still queued: nothing moves, and the operator is told why."""
    fill_legacy(redis_client)
    redis_client.lpush("marginwatch.actions", "{}")
    result = migrate(redis_server)
    assert result.returncode == 2
    assert "old action queues still hold messages (marginwatch.actions: 1)" in result.stderr
    assert redis_client.exists("mw:account:alice")

"""The bulk store of ``accounts load`` on a real redis-server: each account versioned, a
change-stream entry per change, in order, and no lost update against a watching writer."""

from __future__ import annotations

from decimal import Decimal

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.state import accounts
from marginwatch.state.accounts import (
    StoredAccount,
    account_to_json,
    iterate_changes,
    partition_account_ids,
    read_account,
    store_states,
    update_account,
    write_account,
)

P = 4
BTC = Position("BTCUSDT", Decimal("0.1"), Decimal(50_000), 10, MarginMode.CROSS)


def account(account_id: str, wallet: int = 1000) -> Account:
    return Account(account_id, Decimal(wallet), (BTC,))


def state(account_id: str, wallet: int = 1000) -> tuple[str, str]:
    return account_id, account_to_json(account(account_id, wallet))


def changes(client: redis.Redis) -> list[tuple[str, int]]:
    """Every ``(account, version)`` on the change streams, stream by stream, in order."""
    return [
        (account_id, version)
        for partition in range(P)
        for _entry, account_id, version in iterate_changes(client, partition, "0")
    ]


def test_each_account_is_stored_at_version_one_with_its_change(redis_client: redis.Redis) -> None:
    """Accounts of every partition, more than one script call's worth: readable, version 1,
    members of their partition, one change each."""
    names = [f"acct-{n}" for n in range(2 * accounts.STORE_SCRIPT_ACCOUNTS + 7)]
    store_states(redis_client, [state(name) for name in names], P)
    for name in names:
        assert read_account(redis_client, name, P) == StoredAccount(1, account(name))
    members = [partition_account_ids(redis_client, partition) for partition in range(P)]
    assert sorted(name for held in members for name in held) == sorted(names)
    assert all(name in members[partition_of(name, P)] for name in names)
    assert sorted(changes(redis_client)) == sorted((name, 1) for name in names)


def test_a_reload_bumps_every_version(redis_client: redis.Redis) -> None:
    """Stored again: version 2 and the new state, a second change each."""
    store_states(redis_client, [state("a"), state("b")], P)
    store_states(redis_client, [state("a", 5), state("b", 6)], P)
    assert read_account(redis_client, "a", P) == StoredAccount(2, account("a", 5))
    assert read_account(redis_client, "b", P) == StoredAccount(2, account("b", 6))
    assert sorted(changes(redis_client)) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]


def test_an_account_met_twice_ends_with_its_later_state(redis_client: redis.Redis) -> None:
    """Two states of one account in one call: both written, in order."""
    store_states(redis_client, [state("a", 1), state("b"), state("a", 2)], P)
    assert read_account(redis_client, "a", P) == StoredAccount(2, account("a", 2))
    assert [change for change in changes(redis_client) if change[0] == "a"] == [("a", 1), ("a", 2)]


def test_a_watching_writer_retries_after_a_load(redis_client: redis.Redis) -> None:
    """A load between a writer's read and its commit aborts the commit: the writer runs again
    on the loaded version, so neither change is lost and versions stay in order."""
    store_states(redis_client, [state("a")], P)
    seen: list[int] = []

    def deposit(current: StoredAccount | None, pipe: Pipeline) -> None:
        assert current is not None
        seen.append(current.version)
        if len(seen) == 1:  # a load lands meanwhile
            store_states(redis_client, [state("a", 2_000)], P)
        wallet = current.account.cross_wallet_balance + 1
        write_account(pipe, Account("a", wallet, current.account.positions), P)

    update_account(redis_client, "a", P, deposit)
    assert seen == [1, 2]
    assert read_account(redis_client, "a", P) == StoredAccount(3, account("a", 2_001))
    assert changes(redis_client) == [("a", 1), ("a", 2), ("a", 3)]


def test_the_load_touches_only_partition_keys(redis_client: redis.Redis) -> None:
    """Every key written lies under a partition's tag (one hash slot per script call)."""
    store_states(redis_client, [state(f"acct-{n}") for n in range(20)], P)
    written = {key.decode() for key in redis_client.keys("*")}
    assert all(key.startswith(keys.PREFIX + "{p") for key in written), written

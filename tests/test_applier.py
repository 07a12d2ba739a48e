"""The account-events applier on a real redis-server: order, versions, dead letters, dedup."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import free_port
from marginwatch.client import publish_account_event
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.state.accounts import read_account, store_accounts
from marginwatch.state.applier import (
    AppliedCounts,
    apply_pending,
    ensure_group,
    partition_lease,
    reclaim_pending,
    run_applier,
)
from marginwatch.state.lease import Lease
from tests.polling import wait_for
from tests.tables import BTC_2024

PARTITIONS = 4
TABLES = {"BTCUSDT": BTC_2024}
GROUP = keys.ACCOUNT_EVENTS_GROUP
HOME = partition_of("a1", PARTITIONS)  # a1's partition
STREAM = keys.account_events(HOME)
LEASES: dict[str, Lease] = {}


@pytest.fixture(autouse=True)
def _fresh_leases() -> None:
    """Each test's consumers start without a lease."""
    LEASES.clear()


def load(client: redis.Redis, wallet: str = "1000", *positions: Position) -> None:
    """Store account ``a1`` (version 1)."""
    store_accounts(client, [Account("a1", Decimal(wallet), positions)], PARTITIONS)


def publish(client: redis.Redis, **event: Any) -> str:
    """Append an event of ``a1`` as the trading core does; its stream id."""
    document = {"account_id": "a1", **event}
    entry_id = client.xadd(STREAM, {"event": json.dumps(document)})
    return entry_id.decode()  # type: ignore[union-attr]


def lease_of(client: redis.Redis, consumer: str) -> Lease:
    """``consumer``'s lease on a1's partition, taken (or renewed) now."""
    lease = LEASES.setdefault(consumer, partition_lease(client, HOME, consumer, 10_000))
    assert lease.keep(), f"{consumer} cannot take the lease"
    return lease


def step(client: redis.Redis, consumer: str = "applier") -> AppliedCounts:
    """One ``apply_pending`` call on a1's partition, holding the lease."""
    return apply_pending(client, TABLES, PARTITIONS, lease_of(client, consumer), HOME, count=100)


def wallet(client: redis.Redis) -> Decimal:
    """The stored cross wallet of ``a1``."""
    stored = read_account(client, "a1", PARTITIONS)
    assert stored is not None
    return stored.account.cross_wallet_balance


def version(client: redis.Redis) -> int:
    """The stored version of ``a1``."""
    stored = read_account(client, "a1", PARTITIONS)
    assert stored is not None
    return stored.version


def pending(client: redis.Redis) -> int:
    """Entries delivered to the group and not acknowledged."""
    return int(client.xpending(STREAM, GROUP)["pending"])


def dead_letters(client: redis.Redis) -> list[dict[str, str]]:
    """The dead-letter stream's entries as text."""
    entries: list[Any] = client.xrange(keys.dead_letters(HOME))  # type: ignore[assignment]
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


def test_accepted_event_bumps_the_version_and_notes_the_change(redis_client: redis.Redis) -> None:
    """A deposit: new wallet, version 1 -> 2, a change-stream entry, the entry acknowledged."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="250.5")
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("250.5")
    assert version(redis_client) == 2
    changes: list[Any] = redis_client.xrange(  # type: ignore[assignment]
        keys.partition_changes(HOME)
    )
    assert changes[-1][1] == {b"account": b"a1", b"version": b"2"}
    assert pending(redis_client) == 0


def test_rejected_event_goes_to_the_dead_letters(redis_client: redis.Redis) -> None:
    """The original JSON, the reason and the stream id; the account is untouched."""
    load(redis_client)
    entry_id = publish(redis_client, type="withdraw", amount="1500")
    assert step(redis_client) == AppliedCounts(rejected=1)
    (letter,) = dead_letters(redis_client)
    assert json.loads(letter["event"]) == {"account_id": "a1", "type": "withdraw", "amount": "1500"}
    assert letter["reason"] == "amount: withdrawal of 1500 exceeds the available 1000"
    assert letter["stream_id"] == entry_id
    assert (version(redis_client), wallet(redis_client)) == (1, Decimal("1000"))
    assert pending(redis_client) == 0


def test_malformed_entries_and_unknown_accounts_are_dead_lettered(
    redis_client: redis.Redis,
) -> None:
    """Bad JSON, a missing ``event`` field, an unknown account: dead letters, no crash."""
    redis_client.xadd(STREAM, {"event": "{not json"})
    redis_client.xadd(STREAM, {"payload": "{}"})
    publish(redis_client, type="deposit", amount="1")
    assert step(redis_client) == AppliedCounts(rejected=3)
    reasons = [letter["reason"] for letter in dead_letters(redis_client)]
    assert reasons[0].startswith("event: not valid JSON")
    assert reasons[1:] == [
        "event: missing (the entry holds one field, event)",
        "account_id: unknown account",
    ]
    assert dead_letters(redis_client)[1]["event"] == '{"payload": "{}"}'


def test_events_of_one_account_apply_in_stream_order(redis_client: redis.Redis) -> None:
    """The withdrawal fits only after the deposit before it; the last one sees both."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="100")
    publish(redis_client, type="withdraw", amount="1100")
    publish(redis_client, type="withdraw", amount="0.01")
    publish(redis_client, type="deposit", amount="5")
    assert step(redis_client) == AppliedCounts(accepted=3, rejected=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("100") - Decimal("1100") + Decimal("5")
    assert version(redis_client) == 1 + 3
    (letter,) = dead_letters(redis_client)
    assert letter["reason"] == "amount: withdrawal of 0.01 exceeds the available 0"


def test_duplicate_event_id_is_applied_once(redis_client: redis.Redis) -> None:
    """The same ``event_id`` again, in the same batch or later: acknowledged, not applied."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="10", event_id="dep-1")
    publish(redis_client, type="deposit", amount="10", event_id="dep-1")
    assert step(redis_client) == AppliedCounts(accepted=1, duplicates=1)
    publish(redis_client, type="deposit", amount="10", event_id="dep-1")
    assert step(redis_client) == AppliedCounts(duplicates=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("10")
    assert version(redis_client) == 2
    done = keys.idempotency(HOME, "event:dep-1")
    assert redis_client.get(done) == b"accepted"
    assert 0 < redis_client.ttl(done) <= 7 * 24 * 3600
    assert pending(redis_client) == 0


def test_duplicate_of_a_rejected_event_is_not_dead_lettered_again(
    redis_client: redis.Redis,
) -> None:
    """A rejected ``event_id`` is decided: its resend is a duplicate, even if it would fit now."""
    load(redis_client)
    publish(redis_client, type="withdraw", amount="1500", event_id="w-1")
    publish(redis_client, type="deposit", amount="1000")
    publish(redis_client, type="withdraw", amount="1500", event_id="w-1")
    assert step(redis_client) == AppliedCounts(accepted=1, rejected=1, duplicates=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("1000")
    assert len(dead_letters(redis_client)) == 1


def test_marks_come_from_the_prices_hash(redis_client: redis.Redis) -> None:
    """Withdrawal limit at the stored mark: 1000 + 0.1 × (48000 − 50000) − 0.1 × 48000 / 20."""
    position = Position("BTCUSDT", Decimal("0.1"), Decimal(50000), 20, MarginMode.CROSS)
    load(redis_client, "1000", position)
    tick = Tick("BTCUSDT", Decimal("48000"), 1_700_000_000_000, 7)
    redis_client.hset(keys.PRICES, "BTCUSDT", tick.to_json())
    redis_client.hset(keys.PRICES, "BADUSDT", "{not a tick")
    publish(redis_client, type="withdraw", amount="600")
    assert step(redis_client) == AppliedCounts(rejected=1)
    available = Decimal("1000") + Decimal("0.1") * (48000 - 50000) - Decimal("0.1") * 48000 / 20
    assert available == 560
    assert dead_letters(redis_client)[0]["reason"] == (
        "amount: withdrawal of 600 exceeds the available 560"
    )


def test_pending_entry_of_a_dead_consumer_is_reclaimed_first(redis_client: redis.Redis) -> None:
    """A crashed consumer's delivered entry is claimed at start and applied before newer ones."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="500")
    ensure_group(redis_client, HOME)
    redis_client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)  # then dies
    publish(redis_client, type="withdraw", amount="1400")
    stop = threading.Event()
    seen: list[AppliedCounts] = []

    def on_step(counts: AppliedCounts) -> None:
        seen.append(counts)
        if sum(c.total for c in seen) >= 2:
            stop.set()

    totals = run_applier(
        redis_client, TABLES, PARTITIONS, [HOME], "alive", stop, idle_wait_ms=10, on_step=on_step
    )
    assert totals == AppliedCounts(accepted=2)
    assert wallet(redis_client) == Decimal("1000") + Decimal("500") - Decimal("1400")
    assert pending(redis_client) == 0


def test_reclaim_respects_the_idle_time(redis_client: redis.Redis) -> None:
    """Entries idle for less than ``min_idle_ms`` stay with their consumer."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="1")
    ensure_group(redis_client, HOME)
    redis_client.xreadgroup(GROUP, "ghost", {STREAM: ">"})
    assert reclaim_pending(redis_client, HOME, "alive", min_idle_ms=60_000) == 0
    assert step(redis_client, "alive") == AppliedCounts()
    assert reclaim_pending(redis_client, HOME, "alive", min_idle_ms=0) == 1
    assert step(redis_client, "alive") == AppliedCounts(accepted=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("1")


def test_event_that_changes_nothing_writes_nothing(redis_client: redis.Redis) -> None:
    """A mode change with no position is accepted without a new version."""
    load(redis_client)
    publish(redis_client, type="margin_mode_change", symbol="BTCUSDT", margin_mode="isolated")
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert version(redis_client) == 1
    assert pending(redis_client) == 0


def test_own_pending_entries_come_before_new_ones(redis_client: redis.Redis) -> None:
    """After a crash between delivery and acknowledgement, the same consumer resumes there."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="500")
    ensure_group(redis_client, HOME)
    redis_client.xreadgroup(GROUP, "applier", {STREAM: ">"})  # crash before XACK
    publish(redis_client, type="withdraw", amount="1400")
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("500") - Decimal("1400")


def test_entry_deleted_before_it_was_applied(redis_client: redis.Redis) -> None:
    """A pending entry trimmed from the stream is dead-lettered, not lost silently."""
    load(redis_client)
    entry_id = publish(redis_client, type="deposit", amount="5")
    ensure_group(redis_client, HOME)
    redis_client.xreadgroup(GROUP, "applier", {STREAM: ">"})
    redis_client.xdel(STREAM, entry_id)
    assert step(redis_client) == AppliedCounts(rejected=1)
    (letter,) = dead_letters(redis_client)
    assert letter == {
        "event": "{}",
        "reason": "event: the entry was deleted from the stream before it was applied",
        "stream_id": entry_id,
    }
    assert pending(redis_client) == 0


def test_redis_errors_propagate() -> None:
    """No server: the error reaches the caller (the daemon restarts)."""
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        step(client)


def test_an_event_in_another_partitions_stream_is_dead_lettered(
    redis_client: redis.Redis,
) -> None:
    """a1's event written to the wrong partition's stream is refused, naming both partitions."""
    load(redis_client)
    other = (HOME + 1) % PARTITIONS
    event = {"type": "deposit", "account_id": "a1", "amount": "5"}
    redis_client.xadd(keys.account_events(other), {"event": json.dumps(event)})
    lease = partition_lease(redis_client, other, "applier", 10_000)
    assert lease.keep()
    assert apply_pending(redis_client, TABLES, PARTITIONS, lease, other) == AppliedCounts(
        rejected=1
    )
    ((_id, letter),) = redis_client.xrange(keys.dead_letters(other))
    assert (
        letter[b"reason"]
        == (
            f"account_id: a1 belongs to partition {HOME}, not to partition {other} whose stream "
            "holds the event"
        ).encode()
    )
    assert (version(redis_client), wallet(redis_client)) == (1, Decimal("1000"))


def test_one_lease_holder_at_a_time_and_a_waiting_one_takes_over(
    redis_client: redis.Redis,
) -> None:
    """While "first" holds the lease "second" cannot take it; released, it can, with a larger
    fencing token."""
    first = lease_of(redis_client, "first")
    second = partition_lease(redis_client, HOME, "second", 10_000)
    assert not second.keep()
    assert first.keep()  # renewing is still fine
    first_token = first.token
    first.release()
    assert not first.held
    assert second.keep()
    assert second.token == first_token + 1
    assert redis_client.get(keys.applier_lease(HOME)) == second.value


def test_an_expired_lease_is_taken_over(redis_client: redis.Redis) -> None:
    """A holder that stops renewing loses the lease after its TTL."""
    stale = partition_lease(redis_client, HOME, "stale", 200)
    assert stale.keep()
    fresh = partition_lease(redis_client, HOME, "fresh", 10_000)
    assert not fresh.keep()
    wait_for(fresh.keep, "the lease to expire and be taken", timeout=5)
    assert fresh.token > stale.token


def test_an_applier_whose_lease_was_taken_reads_and_writes_nothing(
    redis_client: redis.Redis,
) -> None:
    """Fencing: "old" still believes it holds the lease, "new" took it; old's step takes no
    entry (else new would apply the later withdrawal first, and refuse it) and gives the lease
    up; new applies the deposit, then the withdrawal, in stream order."""
    load(redis_client, "0")
    old = lease_of(redis_client, "old")
    publish(redis_client, type="deposit", amount="100")
    redis_client.delete(keys.applier_lease(HOME))  # as if it had expired
    new = partition_lease(redis_client, HOME, "new", 10_000)
    assert new.keep()
    assert apply_pending(redis_client, TABLES, PARTITIONS, old, HOME) == AppliedCounts()
    assert not old.held
    assert pending(redis_client) == 0  # not even delivered to old
    publish(redis_client, type="withdraw", amount="100")
    assert apply_pending(redis_client, TABLES, PARTITIONS, new, HOME) == AppliedCounts(accepted=2)
    assert (version(redis_client), wallet(redis_client)) == (3, Decimal("0"))
    assert dead_letters(redis_client) == []


def test_the_client_writes_to_the_accounts_partition(redis_client: redis.Redis) -> None:
    """``publish_account_event`` reads P from Redis and picks the partition's stream."""
    load(redis_client)
    entry_id = publish_account_event(
        redis_client, {"type": "deposit", "account_id": "a1", "amount": "3"}
    )
    ((found_id, fields),) = redis_client.xrange(STREAM)
    assert found_id.decode() == entry_id
    assert json.loads(fields[b"event"]) == {"type": "deposit", "account_id": "a1", "amount": "3"}
    assert step(redis_client) == AppliedCounts(accepted=1)
    with pytest.raises(ValueError, match=r"^account_id: required"):
        publish_account_event(redis_client, {"type": "deposit", "amount": "3"})


def test_a_fill_that_closes_a_pool_ends_its_episode(redis_client: redis.Redis) -> None:
    """An isolated position in a margin-call episode is closed: its episode ends with it, in
    the same transaction; the cross pool's episode stays."""
    isolated = Position("BTCUSDT", Decimal("0.1"), Decimal(50000), 20, MarginMode.ISOLATED,
                        isolated_wallet=Decimal(250))  # fmt: skip
    cross = Position("ETHUSDT", Decimal(1), Decimal(2500), 10, MarginMode.CROSS)
    load(redis_client, "1000", isolated, cross)
    for pool in ("isolated:BTCUSDT:BOTH", "cross"):
        redis_client.set(keys.episode(HOME, "a1", pool), 1)
        redis_client.sadd(keys.partition_episodes(HOME), f"a1|{pool}")
    publish(redis_client, type="position_change", symbol="BTCUSDT", quantity="0")
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert not redis_client.exists(keys.episode(HOME, "a1", "isolated:BTCUSDT:BOTH"))
    assert redis_client.exists(keys.episode(HOME, "a1", "cross"))
    assert redis_client.smembers(keys.partition_episodes(HOME)) == {b"a1|cross"}


def test_an_owner_that_lost_track_of_its_lease_takes_it_again(redis_client: redis.Redis) -> None:
    """Its lease is still in Redis (a release failed): the same owner takes it again with a new
    token, at once; another owner still cannot."""
    first = partition_lease(redis_client, HOME, "executor-h-1", 10_000)
    assert first.keep()
    again = partition_lease(redis_client, HOME, "executor-h-1", 10_000)
    assert again.keep()
    assert again.token == first.token + 1
    assert not partition_lease(redis_client, HOME, "executor-h-11", 10_000).keep()
    assert redis_client.get(keys.applier_lease(HOME)) == again.value  # first's writes are fenced

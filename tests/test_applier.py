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
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import free_port
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.state.accounts import partition_of, read_account, store_accounts
from marginwatch.state.applier import (
    AppliedCounts,
    apply_pending,
    ensure_group,
    reclaim_pending,
    run_applier,
)
from tests.tables import BTC_2024

PARTITIONS = 4
TABLES = {"BTCUSDT": BTC_2024}
GROUP = keys.ACCOUNT_EVENTS_GROUP


def load(client: redis.Redis, wallet: str = "1000", *positions: Position) -> None:
    """Store account ``a1`` (version 1)."""
    store_accounts(client, [Account("a1", Decimal(wallet), positions)], PARTITIONS)


def publish(client: redis.Redis, **event: Any) -> str:
    """Append an event of ``a1`` as the trading core does; its stream id."""
    document = {"account_id": "a1", **event}
    entry_id = client.xadd(keys.ACCOUNT_EVENTS, {"event": json.dumps(document)})
    return entry_id.decode()  # type: ignore[union-attr]


def step(client: redis.Redis, consumer: str = "applier") -> AppliedCounts:
    """One ``apply_pending`` call, not blocking."""
    return apply_pending(client, TABLES, PARTITIONS, consumer, count=100, block_ms=None)


def wallet(client: redis.Redis) -> Decimal:
    """The stored cross wallet of ``a1``."""
    stored = read_account(client, "a1")
    assert stored is not None
    return stored.account.cross_wallet_balance


def version(client: redis.Redis) -> int:
    """The stored version of ``a1``."""
    stored = read_account(client, "a1")
    assert stored is not None
    return stored.version


def pending(client: redis.Redis) -> int:
    """Entries delivered to the group and not acknowledged."""
    return int(client.xpending(keys.ACCOUNT_EVENTS, GROUP)["pending"])


def dead_letters(client: redis.Redis) -> list[dict[str, str]]:
    """The dead-letter stream's entries as text."""
    entries: list[Any] = client.xrange(keys.DEAD_LETTERS)  # type: ignore[assignment]
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


def test_accepted_event_bumps_the_version_and_notes_the_change(redis_client: redis.Redis) -> None:
    """A deposit: new wallet, version 1 -> 2, a change-stream entry, the entry acknowledged."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="250.5")
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("250.5")
    assert version(redis_client) == 2
    changes: list[Any] = redis_client.xrange(  # type: ignore[assignment]
        keys.partition_changes(partition_of("a1", PARTITIONS))
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
    redis_client.xadd(keys.ACCOUNT_EVENTS, {"event": "{not json"})
    redis_client.xadd(keys.ACCOUNT_EVENTS, {"payload": "{}"})
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
    done = keys.idempotency("event:dep-1")
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
    ensure_group(redis_client)
    redis_client.xreadgroup(GROUP, "ghost", {keys.ACCOUNT_EVENTS: ">"}, count=1)  # then dies
    publish(redis_client, type="withdraw", amount="1400")
    stop = threading.Event()
    seen: list[AppliedCounts] = []

    def on_step(counts: AppliedCounts) -> None:
        seen.append(counts)
        if sum(c.total for c in seen) >= 2:
            stop.set()

    totals = run_applier(
        redis_client, TABLES, PARTITIONS, "alive", stop, block_ms=100, on_step=on_step
    )
    assert totals == AppliedCounts(accepted=2)
    assert wallet(redis_client) == Decimal("1000") + Decimal("500") - Decimal("1400")
    assert pending(redis_client) == 0


def test_reclaim_respects_the_idle_time(redis_client: redis.Redis) -> None:
    """Entries idle for less than ``min_idle_ms`` stay with their consumer."""
    load(redis_client)
    publish(redis_client, type="deposit", amount="1")
    ensure_group(redis_client)
    redis_client.xreadgroup(GROUP, "ghost", {keys.ACCOUNT_EVENTS: ">"})
    assert reclaim_pending(redis_client, "alive", min_idle_ms=60_000) == 0
    assert step(redis_client, "alive") == AppliedCounts()
    assert reclaim_pending(redis_client, "alive", min_idle_ms=0) == 1
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
    ensure_group(redis_client)
    redis_client.xreadgroup(GROUP, "applier", {keys.ACCOUNT_EVENTS: ">"})  # crash before XACK
    publish(redis_client, type="withdraw", amount="1400")
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert step(redis_client) == AppliedCounts(accepted=1)
    assert wallet(redis_client) == Decimal("1000") + Decimal("500") - Decimal("1400")


def test_entry_deleted_before_it_was_applied(redis_client: redis.Redis) -> None:
    """A pending entry trimmed from the stream is dead-lettered, not lost silently."""
    load(redis_client)
    entry_id = publish(redis_client, type="deposit", amount="5")
    ensure_group(redis_client)
    redis_client.xreadgroup(GROUP, "applier", {keys.ACCOUNT_EVENTS: ">"})
    redis_client.xdel(keys.ACCOUNT_EVENTS, entry_id)
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

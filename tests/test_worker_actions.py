"""Executor actions against real Redis: re-checked, idempotent, Binance-shaped."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.executor import margin_calls
from marginwatch.executor.liquidation import execute_liquidation
from marginwatch.executor.margin_calls import execute_margin_calls, execute_resolution
from marginwatch.producer.publisher import Publisher
from marginwatch.state.accounts import read_account, store_accounts

D = Decimal
WEBHOOK_SCHEMA = Path(__file__).parent.parent / "docs" / "schemas" / "webhook.schema.json"
SETTINGS = Settings(redis_url="unused", partitions=1, liquidation_fee_rate=D("0.001"))
TABLES = dict(default_tables())
ACCOUNT = Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))
CALL = Action(ActionKind.MARGIN_CALL, 0, "E", "cross", 1, 7, 1_700_000_000_000)  # P = 1
RESOLUTION = replace(CALL, kind=ActionKind.MARGIN_CALL_RESOLVED)
LIQUIDATION = replace(CALL, kind=ActionKind.LIQUIDATION)


@pytest.fixture
def stored(redis_client: redis.Redis) -> redis.Redis:
    """ACCOUNT in Redis at version 1."""
    store_accounts(redis_client, [ACCOUNT], partitions=1)
    return redis_client


def mark(client: redis.Redis, price: str, event_time_ms: int) -> None:
    Publisher(client).publish([Tick("BTCUSDT", D(price), event_time_ms)])


def test_margin_call_event_is_binance_shaped_and_sent_once(stored: redis.Redis) -> None:
    """At 48,950 (ratio 0.911): one MARGIN_CALL with cw and the position; then duplicate."""
    mark(stored, "48950", 1)
    assert execute_margin_calls(stored, TABLES, SETTINGS, [CALL]) == ["sent"]
    [(_id, fields)] = stored.xrange(keys.margin_call_events(0))
    event = json.loads(fields[b"event"])
    assert event["e"] == "MARGIN_CALL"
    assert event["cw"] == "1265"
    assert event["p"] == [{"s": "BTCUSDT", "ps": "BOTH", "pa": "1", "mt": "CROSSED", "iw": "0",
                           "mp": "48950", "up": "-1050", "mm": "195.8"}]  # fmt: skip
    assert execute_margin_calls(stored, TABLES, SETTINGS, [CALL]) == ["duplicate"]
    assert stored.xlen(keys.margin_call_events(0)) == 1


def test_margin_call_not_confirmed_after_recovery(stored: redis.Redis) -> None:
    """At 49,500 the exact ratio is 198 / 765 = 0.26: nothing is sent."""
    mark(stored, "49500", 1)
    assert execute_margin_calls(stored, TABLES, SETTINGS, [CALL]) == ["not_confirmed"]
    assert stored.xlen(keys.margin_call_events(0)) == 0


def test_resolution_ends_the_episode(stored: redis.Redis) -> None:
    """After a margin call, a ratio below 0.75 resolves it once."""
    mark(stored, "48950", 1)
    execute_margin_calls(stored, TABLES, SETTINGS, [CALL])
    mark(stored, "49500", 2)
    assert execute_resolution(stored, TABLES, SETTINGS, RESOLUTION) == "sent"
    assert execute_resolution(stored, TABLES, SETTINGS, RESOLUTION) == "duplicate"
    kinds = [fields[b"kind"] for _id, fields in stored.xrange(keys.margin_call_events(0))]
    assert kinds == [b"margin_call", b"resolved"]


def test_resolution_is_not_confirmed_above_the_rearm_level(stored: redis.Redis) -> None:
    """At 48,989.5 the ratio is 195.958 / 254.5 = 0.77, above 0.8 − 0.05: the episode stays."""
    mark(stored, "48950", 1)
    execute_margin_calls(stored, TABLES, SETTINGS, [CALL])
    mark(stored, "48989.5", 2)
    assert execute_resolution(stored, TABLES, SETTINGS, RESOLUTION) == "not_confirmed"
    assert stored.exists(keys.episode(0, "E", "cross"))
    assert [f[b"kind"] for _id, f in stored.xrange(keys.margin_call_events(0))] == [b"margin_call"]


def test_a_liquidation_with_margin_left_credits_the_fee_to_the_ledger(
    redis_client: redis.Redis,
) -> None:
    """Wallet 1,400, 1 BTC from 50,000 at 48,700: MB 100 < MM 194.8; closed: −1,300, fee
    48,700 × 0.1% = 48.7 to the partition's ledger, 51.3 left in the wallet."""
    store_accounts(redis_client, [Account("E", D(1400), ACCOUNT.positions)], partitions=1)
    redis_client.set(keys.insurance_fund(0), "1000")
    mark(redis_client, "48700", 1)
    assert execute_liquidation(redis_client, TABLES, SETTINGS, LIQUIDATION) == "liquidated"
    ledger = redis_client.get(keys.insurance_fund(0))
    assert ledger is not None
    assert D(ledger.decode()) == D(1000) + D("48.7")
    after = read_account(redis_client, "E", 1)
    assert after is not None
    assert after.account.cross_wallet_balance == D(1400) - D(1300) - D("48.7")


def test_liquidation_executes_exactly_once(stored: redis.Redis) -> None:
    """At 48,700 the pool is bankrupt: closed once; a redelivered task changes nothing."""
    stored.set(keys.insurance_fund(0), "1000")
    mark(stored, "48700", 1)
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "liquidated"
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "duplicate"
    after = read_account(stored, "E", 1)
    assert after is not None
    assert after.version == 2
    assert after.account.positions == ()
    assert after.account.cross_wallet_balance == 0
    # 1,265 + 1 × (48,700 − 50,000) = −35: no fee, the fund covers 35.
    assert stored.get(keys.insurance_fund(0)) == str(D(1000) - D(35)).encode()
    assert stored.xlen(keys.liquidations(0)) == 1


def test_liquidation_skipped_when_rescued(stored: redis.Redis) -> None:
    """A price back at 49,500 by execution time: skipped, recorded, account unchanged."""
    mark(stored, "49500", 1)
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "skipped"
    ((_id, fields),) = stored.xrange(keys.liquidations(0))
    assert fields[b"kind"] == b"skipped"
    assert fields[b"reason"].startswith(b"rescued")
    version = stored.hget(keys.account(0, "E"), "version")
    assert version == b"1"


def test_a_rescued_pool_that_goes_bankrupt_again_is_liquidated(stored: redis.Redis) -> None:
    """A skip does not stand in the way: the same action, redelivered after the price fell
    again (same account version), liquidates; a redelivered skip is not recorded twice."""
    mark(stored, "49500", 1)
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "skipped"
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "duplicate"
    assert stored.xlen(keys.liquidations(0)) == 1
    mark(stored, "48700", 2)
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "liquidated"
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "duplicate"
    kinds = [fields[b"kind"] for _id, fields in stored.xrange(keys.liquidations(0))]
    assert kinds == [b"skipped", b"liquidation"]
    after = read_account(stored, "E", 1)
    assert after is not None
    assert after.account.positions == ()


def test_an_episode_does_not_open_on_an_account_changed_since_it_was_read(
    stored: redis.Redis,
) -> None:
    """The start script refuses when the account's version is not the one read (a liquidation
    or fill in between may have closed the pool and ended its episode)."""
    episode, stream, episodes, outbox = (
        keys.episode(0, "E", "cross"), keys.margin_call_events(0), keys.partition_episodes(0),
        keys.webhook_outbox(0))  # fmt: skip
    args = (episode, stream, episodes, outbox, keys.account(0, "E"), 7, 60, 1000, "E|cross")
    fields = ("kind", "margin_call")
    assert stored.eval(margin_calls._START_EPISODE, 5, *args, 2, 1, "http://r/", *fields) == -1
    assert not stored.exists(episode)
    assert (stored.xlen(stream), stored.xlen(outbox)) == (0, 0)
    assert stored.eval(margin_calls._START_EPISODE, 5, *args, 1, 1, "http://r/", *fields)
    assert stored.sismember(episodes, "E|cross")
    assert (stored.xlen(stream), stored.xlen(outbox)) == (1, 1)


def test_no_margin_call_for_a_pool_liquidated_meanwhile(stored: redis.Redis) -> None:
    """The liquidation ran first (another executor): the late margin call finds no open pool."""
    stored.set(keys.insurance_fund(0), "1000")
    mark(stored, "48700", 1)
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "liquidated"
    assert execute_margin_calls(stored, TABLES, SETTINGS, [CALL]) == ["gone"]
    assert stored.xlen(keys.margin_call_events(0)) == 0

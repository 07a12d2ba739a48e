"""Executor actions against real Redis: re-checked, idempotent, Binance-shaped."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import jsonschema
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
from marginwatch.executor.webhooks import SIGNATURE_HEADER, WebhookDeliveryError, deliver, verify
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
    outcome, document = execute_margin_calls(stored, TABLES, SETTINGS, [CALL])[0]
    assert outcome == "sent"
    assert document is not None
    event = document["event"]
    assert event["e"] == "MARGIN_CALL"
    assert event["cw"] == "1265"
    assert event["p"] == [{"s": "BTCUSDT", "ps": "BOTH", "pa": "1", "mt": "CROSSED", "iw": "0",
                           "mp": "48950", "up": "-1050", "mm": "195.8"}]  # fmt: skip
    assert execute_margin_calls(stored, TABLES, SETTINGS, [CALL])[0] == ("duplicate", None)
    assert stored.xlen(keys.margin_call_events(0)) == 1


def test_margin_call_not_confirmed_after_recovery(stored: redis.Redis) -> None:
    """At 49,500 the exact ratio is 198 / 765 = 0.26: nothing is sent."""
    mark(stored, "49500", 1)
    assert execute_margin_calls(stored, TABLES, SETTINGS, [CALL])[0] == ("not_confirmed", None)
    assert stored.xlen(keys.margin_call_events(0)) == 0


def test_resolution_ends_the_episode(stored: redis.Redis) -> None:
    """After a margin call, a ratio below 0.75 resolves it once."""
    mark(stored, "48950", 1)
    execute_margin_calls(stored, TABLES, SETTINGS, [CALL])[0]
    mark(stored, "49500", 2)
    assert execute_resolution(stored, TABLES, SETTINGS, RESOLUTION)[0] == "sent"
    assert execute_resolution(stored, TABLES, SETTINGS, RESOLUTION) == ("duplicate", None)
    kinds = [fields[b"kind"] for _id, fields in stored.xrange(keys.margin_call_events(0))]
    assert kinds == [b"margin_call", b"resolved"]


def test_resolution_is_not_confirmed_above_the_rearm_level(stored: redis.Redis) -> None:
    """At 48,989.5 the ratio is 195.958 / 254.5 = 0.77, above 0.8 − 0.05: the episode stays."""
    mark(stored, "48950", 1)
    execute_margin_calls(stored, TABLES, SETTINGS, [CALL])
    mark(stored, "48989.5", 2)
    assert execute_resolution(stored, TABLES, SETTINGS, RESOLUTION) == ("not_confirmed", None)
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


class Receiver(BaseHTTPRequestHandler):
    """Accepts POSTs on /hook and keeps what it got; answers /moved with a redirect to /hook."""

    received: ClassVar[list[tuple[bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body, self.headers[SIGNATURE_HEADER]))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/hook")
        else:
            self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        Receiver.received.append((b"GET", ""))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[str]:
    """A local HTTP receiver on a free port; yields its base URL."""
    Receiver.received.clear()
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_webhook_signature_covers_a_timestamp_and_the_body(receiver: str) -> None:
    """t=…,v1=HMAC-SHA256(secret, "t." + body): the receiver verifies it; another body, an old
    timestamp or another secret fail."""
    body = json.dumps({"event_id": "p0:1-0"}).encode()
    assert deliver(receiver + "/hook", body, "s3cret", 1_700_000_000) == 204
    got, header = Receiver.received[-1]
    assert got == body
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify("s3cret", body, header, now=1_700_000_100)
    assert not verify("s3cret", body + b" ", header, now=1_700_000_100)
    assert not verify("s3cret", body, header, now=1_700_000_000 + 301)  # a replay
    assert not verify("other", body, header, now=1_700_000_100)


def test_a_redirect_is_a_failed_delivery(receiver: str) -> None:
    """302 is not followed (it would arrive as a GET without body): the task retries."""
    with pytest.raises(WebhookDeliveryError, match="302"):
        deliver(receiver + "/moved", b"{}", "s3cret", 1_700_000_000)
    assert [got for got, _header in Receiver.received] == [b"{}"]


def test_webhook_failure_raises_for_retry() -> None:
    """A receiver that is not there raises, so the task retries with backoff."""
    with pytest.raises(WebhookDeliveryError):
        deliver("http://127.0.0.1:9/hook", b"{}", "s3cret", 1_700_000_000)


def test_the_webhook_document_follows_its_schema(stored: redis.Redis) -> None:
    """Margin call and resolution documents validate against docs/schemas/webhook.schema.json;
    their event ids are the stream entries'."""
    schema = json.loads(WEBHOOK_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    mark(stored, "48950", 1)
    _outcome, call = execute_margin_calls(stored, TABLES, SETTINGS, [CALL])[0]
    mark(stored, "49500", 2)
    _outcome, resolved = execute_resolution(stored, TABLES, SETTINGS, RESOLUTION)
    ids = [f"p0:{entry_id.decode()}" for entry_id, _f in stored.xrange(keys.margin_call_events(0))]
    for document in (call, resolved):
        assert document is not None
        assert list(validator.iter_errors(document)) == []
    assert [call["event_id"], resolved["event_id"]] == ids  # type: ignore[index]
    assert (call["kind"], resolved["kind"]) == ("margin_call", "resolved")  # type: ignore[index]
    assert call["margin_ratio"] == "0.91069767"  # type: ignore[index]  # 195.8 / 215, cut


def test_an_episode_does_not_open_on_an_account_changed_since_it_was_read(
    stored: redis.Redis,
) -> None:
    """The start script refuses when the account's version is not the one read (a liquidation
    or fill in between may have closed the pool and ended its episode)."""
    episode, stream, episodes = (keys.episode(0, "E", "cross"), keys.margin_call_events(0),
                                 keys.partition_episodes(0))  # fmt: skip
    args = (episode, stream, episodes, keys.account(0, "E"), 7, 60, 1000, "E|cross")
    assert stored.eval(margin_calls._START_EPISODE, 4, *args, 2, "kind", "margin_call") == -1
    assert not stored.exists(episode)
    assert stored.xlen(stream) == 0
    assert stored.eval(margin_calls._START_EPISODE, 4, *args, 1, "kind", "margin_call")
    assert stored.sismember(episodes, "E|cross")


def test_no_margin_call_for_a_pool_liquidated_meanwhile(stored: redis.Redis) -> None:
    """The liquidation ran first (another executor): the late margin call finds no open pool."""
    stored.set(keys.insurance_fund(0), "1000")
    mark(stored, "48700", 1)
    assert execute_liquidation(stored, TABLES, SETTINGS, LIQUIDATION) == "liquidated"
    assert execute_margin_calls(stored, TABLES, SETTINGS, [CALL]) == [("gone", None)]
    assert stored.xlen(keys.margin_call_events(0)) == 0

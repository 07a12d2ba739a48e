"""Webhooks: the signed POST, the outbox written with the event, and the deliverer."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
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
from marginwatch.cli.embedded_redis import RedisServer, free_port
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.executor import outbox as deliverers
from marginwatch.executor.margin_calls import execute_margin_calls, execute_resolution
from marginwatch.executor.outbox import Deliverer, deliver_pass, retry_delay_seconds
from marginwatch.executor.webhooks import SIGNATURE_HEADER, WebhookDeliveryError, deliver, verify
from marginwatch.producer.publisher import Publisher
from marginwatch.state import outbox
from marginwatch.state.accounts import store_accounts
from tests.polling import wait_for

D = Decimal
WEBHOOK_SCHEMA = Path(__file__).parent.parent / "docs" / "schemas" / "webhook.schema.json"
TABLES = dict(default_tables())
ACCOUNT = Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))
CALL = Action(ActionKind.MARGIN_CALL, 0, "E", "cross", 1, 7, 1_700_000_000_000)  # P = 1
RESOLUTION = replace(CALL, kind=ActionKind.MARGIN_CALL_RESOLVED)


class Receiver(BaseHTTPRequestHandler):
    """Keeps every POST; /hook answers 204, /moved a redirect to /hook, /fail 503."""

    received: ClassVar[list[tuple[str, bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((self.path, body, self.headers[SIGNATURE_HEADER]))
        status = {"/moved": 302, "/fail": 503}.get(self.path, 204)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/hook")
        self.end_headers()

    def do_GET(self) -> None:
        Receiver.received.append((self.path, b"GET", ""))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[str]:
    """A local HTTP receiver on a free port; yields its base URL."""
    Receiver.received.clear()
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def settings_for(*urls: str, max_attempts: int = 5) -> Settings:
    return Settings(redis_url="unused", partitions=1, webhook_urls=list(urls),
                    webhook_secret="s3cret", webhook_max_attempts=max_attempts)  # fmt: skip


def margin_call(client: redis.Redis, settings: Settings) -> None:
    """ACCOUNT at 48,950 (ratio 195.8 / 215 = 0.911): its margin call, sent."""
    store_accounts(client, [ACCOUNT], partitions=1)
    Publisher(client).publish([Tick("BTCUSDT", D("48950"), 1)])
    assert execute_margin_calls(client, TABLES, settings, [CALL]) == ["sent"]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def deliverer_for(
    client: redis.Redis, settings: Settings, clock: Clock, counted: list[str], consumer: str = "a"
) -> Deliverer:
    outbox.ensure_group(client, 0)
    return Deliverer(client, settings, [0], consumer, counted.append, random.Random(7), clock)


def test_webhook_signature_covers_a_timestamp_and_the_body(receiver: str) -> None:
    """t=…,v1=HMAC-SHA256(secret, "t." + body): the receiver verifies it; another body, an old
    timestamp or another secret fail."""
    body = json.dumps({"event_id": "p0:1-0"}).encode()
    assert deliver(receiver + "/hook", body, "s3cret", 1_700_000_000) == 204
    _path, got, header = Receiver.received[-1]
    assert got == body
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify("s3cret", body, header, now=1_700_000_100)
    assert not verify("s3cret", body + b" ", header, now=1_700_000_100)
    assert not verify("s3cret", body, header, now=1_700_000_000 + 301)  # a replay
    assert not verify("other", body, header, now=1_700_000_100)


def test_a_redirect_is_a_failed_delivery(receiver: str) -> None:
    """302 is not followed (it would arrive as a GET without body)."""
    with pytest.raises(WebhookDeliveryError, match="302"):
        deliver(receiver + "/moved", b"{}", "s3cret", 1_700_000_000)
    assert [(path, got) for path, got, _header in Receiver.received] == [("/moved", b"{}")]


def test_a_receiver_that_is_not_there_is_a_failed_delivery() -> None:
    """Connection refused raises, to be retried."""
    with pytest.raises(WebhookDeliveryError):
        deliver("http://127.0.0.1:9/hook", b"{}", "s3cret", 1_700_000_000)


def test_the_event_script_writes_one_delivery_per_url_following_the_schema(
    redis_client: redis.Redis,
) -> None:
    """The margin call and the resolution each put one outbox entry per URL, whose documents
    validate against docs/schemas/webhook.schema.json and carry the event's stream id."""
    settings = settings_for("http://a.invalid/hook", "http://b.invalid/hook")
    validator = jsonschema.Draft202012Validator(json.loads(WEBHOOK_SCHEMA.read_text("utf-8")))
    margin_call(redis_client, settings)
    Publisher(redis_client).publish([Tick("BTCUSDT", D("49500"), 2)])
    assert execute_resolution(redis_client, TABLES, settings, RESOLUTION) == "sent"
    events = [i.decode() for i, _f in redis_client.xrange(keys.margin_call_events(0))]
    entries = outbox._decoded(redis_client.xrange(keys.webhook_outbox(0)))  # type: ignore[arg-type]
    documents = [deliverers.webhook_document(0, fields) for _id, fields in entries]
    assert [fields["url"][7] for _id, fields in entries] == ["a", "b", "a", "b"]
    assert [d["event_id"] for d in documents] == [f"p0:{events[0]}"] * 2 + [f"p0:{events[1]}"] * 2
    assert [d["kind"] for d in documents] == ["margin_call"] * 2 + ["resolved"] * 2
    assert documents[0]["margin_ratio"] == "0.91069767"  # 195.8 / 215, cut
    for document in documents:
        assert list(validator.iter_errors(document)) == []


def test_no_delivery_for_a_duplicate_or_without_urls(redis_client: redis.Redis) -> None:
    """A duplicate margin call writes nothing; no URL configured, no outbox entry."""
    margin_call(redis_client, settings_for())
    assert execute_margin_calls(redis_client, TABLES, settings_for("http://a/"), [CALL]) == [
        "duplicate"
    ]
    assert redis_client.xlen(keys.webhook_outbox(0)) == 0


def test_a_delivery_is_posted_signed_and_acknowledged(
    redis_client: redis.Redis, receiver: str
) -> None:
    """One POST, verified by the receiver; nothing pending after; the next pass sends none."""
    settings = settings_for(receiver + "/hook")
    margin_call(redis_client, settings)
    counted: list[str] = []
    deliverer = deliverer_for(redis_client, settings, Clock(time.time()), counted)
    assert deliver_pass(deliverer) == 1
    [(_path, body, header)] = Receiver.received
    assert verify("s3cret", body, header, now=time.time())
    assert json.loads(body)["account_id"] == "E"
    assert (
        redis_client.xpending(keys.webhook_outbox(0), keys.WEBHOOK_DELIVERERS_GROUP)["pending"] == 0
    )
    assert (deliver_pass(deliverer), counted) == (0, ["delivered"])


def test_a_failing_delivery_is_retried_with_backoff_then_dead_lettered(
    redis_client: redis.Redis, receiver: str
) -> None:
    """503 three times (max 3 attempts): retried after 0.5–1 s, then 1–2 s, then given up to
    the dead letters with its error; never attempted before its time."""
    settings = settings_for(receiver + "/fail", max_attempts=3)
    margin_call(redis_client, settings)
    clock, counted = Clock(1_800_000_000.0), []
    deliverer = deliverer_for(redis_client, settings, clock, counted)
    assert deliver_pass(deliverer) == 1
    [(_id, due_ms)] = redis_client.zrange(keys.webhook_retries(0), 0, -1, withscores=True)
    assert 500 <= due_ms - clock.now * 1000 < 1000
    assert deliver_pass(deliverer) == 0  # not due yet
    clock.now += 1.0
    assert deliver_pass(deliverer) == 1
    [(_id, due_ms)] = redis_client.zrange(keys.webhook_retries(0), 0, -1, withscores=True)
    assert 1000 <= due_ms - clock.now * 1000 < 2000
    clock.now += 2.0
    assert deliver_pass(deliverer) == 1
    assert counted == ["retried", "retried", "failed"]
    [(_id, letter)] = redis_client.xrange(keys.webhook_dead_letters(0))
    assert (letter[b"attempts"], letter[b"kind"]) == (b"3", b"margin_call")
    assert b"503" in letter[b"error"]
    assert redis_client.zcard(keys.webhook_retries(0)) == 0
    assert redis_client.hlen(keys.webhook_attempts(0)) == 0
    assert len(Receiver.received) == 3


def test_retry_delays_grow_exponentially_with_jitter() -> None:
    """After the n-th failure: min(300, 2^(n-1)) s times a factor in [0.5, 1)."""
    rng = random.Random(1)
    for failures in range(1, 15):
        ceiling = min(300.0, 2.0 ** (failures - 1))
        delays = [retry_delay_seconds(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= delay < ceiling for delay in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


def test_a_delivery_stranded_on_a_dead_deliverer_is_taken_over(
    redis_client: redis.Redis, receiver: str
) -> None:
    """Read by a deliverer that died before its POST: another takes it over once it has been
    pending for the claim time, not before."""
    settings = settings_for(receiver + "/hook")
    settings = settings.model_copy(update={"webhook_claim_after_seconds": 0.3})
    margin_call(redis_client, settings)
    outbox.ensure_group(redis_client, 0)
    assert len(outbox.read_new(redis_client, 0, "dead", 10)) == 1
    counted: list[str] = []
    deliverer = deliverer_for(redis_client, settings, Clock(time.time()), counted, "alive")
    assert deliver_pass(deliverer) == 0
    wait_for(lambda: deliver_pass(deliverer) == 1, "the stranded delivery taken over", timeout=5)
    assert (counted, len(Receiver.received)) == (["delivered"], 1)


def test_two_deliverers_do_not_take_the_same_retry(redis_client: redis.Redis) -> None:
    """A due retry is taken for a lease: a second deliverer finds nothing until it ends."""
    redis_client.xadd(keys.webhook_outbox(0), {"url": "http://a/"}, id="1-0")
    redis_client.zadd(keys.webhook_retries(0), {"1-0": 1000})
    assert [i for i, _f in outbox.take_due_retries(redis_client, 0, 2000, 30_000, 4)] == ["1-0"]
    assert outbox.take_due_retries(redis_client, 0, 2000, 30_000, 4) == []
    assert len(outbox.take_due_retries(redis_client, 0, 32_001, 30_000, 4)) == 1


def test_a_deliverer_killed_after_its_post_delivers_again_with_the_same_event_id(
    redis_client: redis.Redis, receiver: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A real ``executor --queues webhooks`` crashes after the receiver's 2xx and before its
    acknowledgement; the restarted one delivers the event again (at least once), with the same
    event id, and then nothing is pending."""
    settings = settings_for(receiver + "/hook")
    margin_call(redis_client, settings)
    env = {**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url, "MARGINWATCH_PARTITIONS": "1",
           "MARGINWATCH_WEBHOOK_URLS": json.dumps([receiver + "/hook"]),
           "MARGINWATCH_WEBHOOK_SECRET": "s3cret",
           "MARGINWATCH_WEBHOOK_CLAIM_AFTER_SECONDS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "marginwatch", "executor", "--queues", "webhooks"]
    log = (tmp_path / "deliverer.log").open("wb")
    crash_env = {**env, "MARGINWATCH_CRASH_AT": "webhooks:after-post"}
    crashed = subprocess.run(command, env=crash_env, stdout=log, stderr=subprocess.STDOUT,
                             timeout=60, check=False)  # fmt: skip
    assert crashed.returncode == 137
    restarted = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(Receiver.received) == 2, lambda: f"{Receiver.received}", timeout=30)
        pending = redis_client.xpending(keys.webhook_outbox(0), keys.WEBHOOK_DELIVERERS_GROUP)
        wait_for(
            lambda: (
                redis_client.xpending(keys.webhook_outbox(0), keys.WEBHOOK_DELIVERERS_GROUP)[
                    "pending"
                ]
                == 0
            ),
            lambda: f"{pending}",
            timeout=10,
        )
    finally:
        restarted.kill()
        restarted.wait(timeout=10)
    first, second = (json.loads(body) for _path, body, _header in Receiver.received)
    assert first == second


def test_a_webhook_executor_counts_deliveries_retries_and_failures(
    redis_client: redis.Redis, receiver: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A real ``executor --queues webhooks``: a margin call's delivery to /hook is accepted;
    the one to /fail is retried twice (3 attempts), then given up; its /metrics says so."""
    margin_call(redis_client, settings_for(receiver + "/hook", receiver + "/fail"))
    port = free_port()
    env = {**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url,
           "MARGINWATCH_PARTITIONS": "1", "MARGINWATCH_WEBHOOK_MAX_ATTEMPTS": "3",
           "MARGINWATCH_WEBHOOK_SECRET": "s3cret",
           "MARGINWATCH_METRICS_PORT": str(port)}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "marginwatch", "executor", "--queues", "webhooks"], env=env,
        stdout=(tmp_path / "executor.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deliveries = 'marginwatch_webhook_deliveries_total{result="%s"}'
    expected = {"delivered": 1.0, "retried": 2.0, "failed": 1.0}

    def counted() -> dict[str, float]:
        found = scraped(port)
        return {result: found.get(deliveries % result, 0.0) for result in expected}

    try:
        wait_for(lambda: counted() == expected, lambda: f"deliveries {counted()}", timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert redis_client.xlen(keys.webhook_dead_letters(0)) == 1


def scraped(port: int) -> dict[str, float]:
    """The samples served on ``port`` (empty while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in pairs}

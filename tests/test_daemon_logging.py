"""The daemons' logging, from real ``marginwatch`` processes against a private redis-server with
a password: one format of their own (Celery's included), text or JSON lines with the time, the
level, the daemon and its partitions, and no secret in any line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.partitions import format_partitions, parse_partitions, partition_of
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, free_port, start_redis_server
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import make_celery, send_actions
from marginwatch.state.accounts import store_accounts
from tests.polling import wait_for

SCRIPT = Path(sys.executable).parent / "marginwatch"
REDIS_PASSWORD = "redis-password-in-no-log"
WEBHOOK_SECRET = "webhook-secret-in-no-log"
HOOK_PASSWORD = "hook-password-in-no-log"
SECRETS = (REDIS_PASSWORD, WEBHOOK_SECRET, HOOK_PASSWORD)
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LEVELS = "DEBUG|INFO|WARNING|ERROR|CRITICAL"
TEXT_LINE = re.compile(rf"^{TIME} ({LEVELS}) executor partitions=0-1 \S+: ")
JSON_KEYS = {"time", "level", "daemon", "logger", "message"}
P = 2
D = Decimal
# At a mark of 48,950 its cross margin ratio is 0.911: a margin call, whose webhook is queued.
ACCOUNT = Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A private redis-server that requires a password (in its URL)."""
    server = start_redis_server(password=REDIS_PASSWORD)
    yield server
    server.stop()


@dataclass
class Logged:
    """What a daemon wrote: stdout and stderr."""

    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return self.stderr.splitlines()


def environment(server: RedisServer, hook: str, **settings: str) -> dict[str, str]:
    """Only these settings: the locked Redis, a webhook URL with a password, a secret, P = 2."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARGINWATCH")}
    configured = {
        "redis_url": server.url,
        "partitions": str(P),
        "webhook_urls": json.dumps([hook]),
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_max_attempts": "2",
        **settings,
    }
    return env | {f"MARGINWATCH_{name.upper()}": value for name, value in configured.items()}


def queue_a_margin_call(server: RedisServer) -> None:
    """ACCOUNT stored at a mark that puts it at margin call, and its margin call queued for the
    executor (which records it with its webhook delivery in the partition's outbox). The margin
    call is new: the database was emptied before the executor started."""
    client = redis.Redis.from_url(server.url)
    store_accounts(client, [ACCOUNT], P)
    Publisher(client).publish([Tick("BTCUSDT", D("48950"), 1)])
    client.close()
    partition = partition_of(ACCOUNT.account_id, P)
    app = make_celery(Settings(redis_url=server.url, partitions=P), server.url)
    send_actions(app, partition, [Action(ActionKind.MARGIN_CALL, partition, "E", "cross", 1)])
    app.close()


def executor_failing_a_webhook(server: RedisServer, tmp_path: Path, **settings: str) -> Logged:
    """Run ``marginwatch executor`` until it is ready, then until it has taken a margin call and
    given up delivering its webhook to a closed port (logged with the URL), and stop it."""
    hook = f"http://ops:{HOOK_PASSWORD}@127.0.0.1:{free_port()}/hook"
    redis.Redis.from_url(server.url).flushdb()
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([SCRIPT, "executor"], stdout=stdout, stderr=stderr,
                                   env=environment(server, hook, **settings))  # fmt: skip
    try:
        wait_for(lambda: "ready." in err.read_text(), err.read_text, timeout=60)
        queue_a_margin_call(server)
        wait_for(lambda: "given up" in err.read_text(), err.read_text)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return Logged(out.read_text(), err.read_text())


def assert_no_secret(logged: Logged) -> None:
    for secret in SECRETS:
        assert secret not in logged.stdout
        assert secret not in logged.stderr


def test_text_lines_name_the_daemon_and_keep_secrets_out(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    """Every record, Celery's too, in one text format at INFO; URLs logged without passwords."""
    logged = executor_failing_a_webhook(locked_redis, tmp_path)
    assert_no_secret(logged)
    records = [line for line in logged.lines() if re.match(TIME, line)]
    assert records, logged.stderr
    assert all(TEXT_LINE.match(line) for line in records), logged.stderr
    assert any(" INFO executor partitions=0-1 celery.apps.worker: " in r for r in records)
    assert "redis://:***@127.0.0.1:" in logged.stderr
    assert "http://ops:***@127.0.0.1:" in logged.stderr


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as a JSON object (fails on a line that is not one)."""
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in objects)
    return objects


def test_json_lines_carry_the_fields_and_keep_secrets_out(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    """MARGINWATCH_LOG_FORMAT=json: each stderr line one object with the time, the level, the
    daemon, its partitions, the logger and the message, and no record extras (Celery's carry a
    task's arguments)."""
    logged = executor_failing_a_webhook(locked_redis, tmp_path, log_format="json")
    assert_no_secret(logged)
    records = parsed(logged.lines())
    assert all(set(record) >= JSON_KEYS for record in records), records
    assert {(r["daemon"], r["partitions"]) for r in records} == {("executor", "0-1")}
    assert all(re.fullmatch(TIME, record["time"]) for record in records)
    assert any(r["logger"] == "celery.apps.worker" and r["level"] == "INFO" for r in records)
    assert "data" not in {key for record in records for key in record}
    assert "-------------- [queues]" not in logged.stdout  # no Celery banner


def test_json_lines_of_the_producer_have_no_partitions(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    """The producer logs JSON lines as ``producer``, with the Redis URL redacted."""
    hook = f"http://ops:{HOOK_PASSWORD}@127.0.0.1:1/hook"
    env = environment(locked_redis, hook, log_format="json")
    result = subprocess.run([SCRIPT, "producer", "--duration", "0.5", "--symbols", "2"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_no_secret(Logged(result.stdout, result.stderr))
    records = parsed(result.stderr.splitlines())
    assert all(set(record) >= JSON_KEYS and "partitions" not in record for record in records)
    assert {record["daemon"] for record in records} == {"producer"}
    messages = [record["message"] for record in records]
    assert any(message.startswith("publishing to Redis at redis://:***@") for message in messages)
    assert messages[-1].startswith("published ")


def test_the_log_level_setting_holds_back_lower_records(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    """MARGINWATCH_LOG_LEVEL=WARNING: a producer run that goes well logs nothing."""
    env = environment(locked_redis, "http://127.0.0.1:1/hook", log_level="warning")
    result = subprocess.run([SCRIPT, "producer", "--duration", "0.5", "--symbols", "2"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("partitions", "shown"),
    [([0, 1, 2, 3], "0-3"), ([0, 2, 4], "0,2,4"), ([7, 3, 4, 5, 0], "0,3-5,7"), ([], "")],
)
def test_partitions_are_shown_as_ranges(partitions: list[int], shown: str) -> None:
    """The partitions of a log line, written as ``--partitions`` reads them."""
    assert format_partitions(partitions) == shown
    if partitions:
        assert parse_partitions(shown, 8) == sorted(partitions)

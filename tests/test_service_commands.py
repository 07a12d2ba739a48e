"""The service commands as users run them: accounts load, status, worker refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.settings import Settings
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.runtime.celery_app import make_celery
from marginwatch.runtime.process import supervised

EXAMPLE = Path(__file__).parent.parent / "examples" / "snapshot.json"


def run(server: RedisServer, *args: str, partitions: int = 4) -> subprocess.CompletedProcess[str]:
    """``python -m marginwatch ARGS`` against the private server."""
    env = {**os.environ, "MARGINWATCH_REDIS_URL": server.url,
           "MARGINWATCH_PARTITIONS": str(partitions)}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "marginwatch", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_accounts_load_stores_each_account(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Both example accounts land at version 1 and P is recorded."""
    result = run(redis_server, "accounts", "load", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stored 2 accounts in 4 partitions\n"
    assert redis_client.hget(keys.account(partition_of("alice", 4), "alice"), "version") == b"1"
    assert redis_client.get(keys.PARTITION_COUNT) == b"4"


def test_accounts_load_rejects_a_bad_snapshot(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A bad snapshot stores nothing and names the field."""
    bad = json.loads(EXAMPLE.read_text())
    bad["accounts"][1]["positions"][0]["quantity"] = "0"
    result = subprocess.run(
        [sys.executable, "-m", "marginwatch", "accounts", "load", "-"], input=json.dumps(bad),
        env={**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url}, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("marginwatch: accounts[1].positions[0].quantity")
    assert redis_client.keys("*:account:*") == []


def test_worker_with_another_partition_count_refuses_to_start(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """P is recorded on first use; a worker configured with another P exits 2 and says why."""
    redis_client.set(keys.PARTITION_COUNT, 8)
    result = run(redis_server, "worker", "--partitions", "0-3", partitions=4)
    assert result.returncode == 2
    assert "this deployment has 8 partitions" in result.stderr


def test_worker_refuses_partitions_outside_the_range(redis_server: RedisServer) -> None:
    """--partitions 2-5 with P = 4 is refused before anything starts."""
    result = run(redis_server, "worker", "--partitions", "2-5")
    assert result.returncode == 2
    assert "--partitions: [4, 5] not within 0-3" in result.stderr


def test_status_of_an_account_is_its_report_at_the_newest_marks(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """``status alice`` prints the evaluate contract at the marks in Redis."""
    run(redis_server, "accounts", "load", str(EXAMPLE))
    for symbol, price in {"BTCUSDT": "67250.5", "ETHUSDT": "2630.12", "SOLUSDT": "172.35"}.items():
        tick = {"s": symbol, "p": price, "E": 1, "seq": 1}
        redis_client.hset(keys.PRICES, symbol, json.dumps(tick))
    result = run(redis_server, "status", "alice")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["accounts"][0]["positions"][0]["notional"] == "100875.75"


def test_celery_is_configured_for_money() -> None:
    """JSON only, late acks requeued on worker loss, prefetch 1, visibility beyond time limits."""
    conf = make_celery(Settings(task_time_limit_seconds=60), "redis://127.0.0.1:1/0").conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit


def test_helper_thread_restarts_after_a_redis_error() -> None:
    """The dispatcher or applier thread comes back after losing Redis, until stopped."""
    stop = threading.Event()
    calls: list[int] = []

    def flaky(stop_event: threading.Event) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("lost")
        stop_event.set()

    supervised(flaky, stop)
    assert len(calls) == 3


def test_executor_with_webhooks_and_no_secret_refuses_to_start(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Unsigned webhooks are refused unless explicitly allowed; the message says how."""
    env = {**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url,
           "MARGINWATCH_WEBHOOK_URLS": '["http://127.0.0.1:9/hook"]'}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "marginwatch", "executor"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "MARGINWATCH_WEBHOOK_SECRET is empty while MARGINWATCH_WEBHOOK_URLS is set" in (
        result.stderr
    )

"""Redis over TLS (``rediss://`` with a CA): every command and daemon, state and broker, against
a real redis-server serving TLS only with certificates the test makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick
from marginwatch.producer.publisher import Publisher
from tests.polling import wait_for
from tests.servers import TlsRedis, make_certificates, start_tls_redis

SNAPSHOT = {
    "mark_prices": {"BTCUSDT": "50000"},
    "accounts": [{"account_id": "E", "cross_wallet_balance": "1265", "positions": [
        {"symbol": "BTCUSDT", "quantity": "1", "entry_price": "50000", "leverage": 20,
         "margin_mode": "cross"}]}],
}  # fmt: skip


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TlsRedis]:
    server = start_tls_redis()
    yield server
    server.stop()


def marginwatch(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MARGINWATCH_REDIS_URL": url, "MARGINWATCH_PARTITIONS": "1"}
    return subprocess.run([sys.executable, "-m", "marginwatch", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)  # fmt: skip


def test_daemons_work_over_tls(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """accounts load, a worker and an executor over rediss://: a margin call is recorded;
    status reads it back."""
    client = redis.Redis.from_url(tls_redis.url)
    client.flushall()
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(SNAPSHOT), encoding="utf-8")
    assert marginwatch(tls_redis.url, "accounts", "load", str(snapshot)).returncode == 0
    Publisher(client).publish([Tick("BTCUSDT", Decimal(50_000), time.time_ns() // 1_000_000)])
    env = {**os.environ, "MARGINWATCH_REDIS_URL": tls_redis.url, "MARGINWATCH_PARTITIONS": "1"}
    log = (tmp_path / "daemons.log").open("ab")
    daemons = [subprocess.Popen([sys.executable, "-m", "marginwatch", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
               for args in (["worker", "--partitions", "0"], ["executor"])]  # fmt: skip
    try:
        wait_for(lambda: client.get(keys.partition_evaluated(0)), "an evaluation over TLS")
        Publisher(client).publish([Tick("BTCUSDT", Decimal(48_950), time.time_ns() // 1_000_000)])
        wait_for(lambda: client.xlen(keys.margin_call_events(0)) == 1, "the margin call")
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=30)
    status = marginwatch(tls_redis.url, "status", "E")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["accounts"][0]["cross"]["status"] == "margin_call"


def test_a_server_signed_by_another_ca_is_refused(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """With a CA that did not sign the server's certificate: one line, exit 1, no traceback."""
    other_ca, _cert, _key = make_certificates(tmp_path)
    url = tls_redis.url.replace(str(tls_redis.ca_file), str(other_ca))
    ran = marginwatch(url, "status")
    assert ran.returncode == 1
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert "cannot reach Redis" in lines[0]
    assert "Traceback" not in ran.stderr

"""``/healthz`` and ``/readyz`` on the daemons' metrics port: heartbeats and readiness checks,
served beside the metrics, and the real daemons losing their Redis and getting it back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from marginwatch.base.health import Health
from marginwatch.base.metrics import ProducerMetrics, serve_metrics
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, free_port, start_redis_server
from marginwatch.engine.brackets import default_tables
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import make_celery
from marginwatch.runtime.health import fail_fast_redis, redis_reachable
from marginwatch.runtime.process import beating, broker_reachable, supervised
from marginwatch.state.accounts import store_accounts
from marginwatch.worker.daemon import books_loaded
from marginwatch.worker.tasks import WorkerRuntime
from tests.polling import wait_for
from tests.test_crash_points import BOOK


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_loop_is_not_alive_and_a_paused_one_is() -> None:
    """A heartbeat older than its bound names its loop; a paused one (waiting on a broker)
    stays alive; readiness reports liveness first, then the first failing check."""
    clock = Clock()
    health = Health(clock=clock)
    dispatcher = health.heartbeat("dispatcher", 60)
    consumer = health.heartbeat("celery consumer", 90, paused=True)
    health.check(lambda: None)
    health.check(lambda: "redis: refused")
    health.check(lambda: "broker: refused")
    assert health.liveness() is None
    assert health.readiness() == "redis: refused"
    clock.now += 61
    assert health.liveness() == "dispatcher: no heartbeat for 61 s"
    assert health.readiness() == "dispatcher: no heartbeat for 61 s"
    dispatcher.beat()
    consumer.resume()
    clock.now += 91
    assert health.liveness() == "dispatcher: no heartbeat for 91 s"
    dispatcher.beat()
    assert health.liveness() == "celery consumer: no heartbeat for 91 s"
    consumer.pause()
    assert health.liveness() is None


def test_a_loop_restarted_after_redis_errors_beats_as_it_starts() -> None:
    """Each start beats, so a helper loop that Redis errors keep restarting (with a backoff)
    stays alive however long Redis is away."""
    clock = Clock()
    heartbeat = Health(clock=clock).heartbeat("dispatcher", 60)
    starts: list[float] = []

    def flaky(stop: threading.Event) -> None:
        starts.append(heartbeat.last)
        clock.now += 45  # the attempt and its backoff
        if len(starts) < 3:
            raise redis.ConnectionError("lost")
        stop.set()

    supervised(beating(flaky, heartbeat), threading.Event())
    assert starts == [1000, 1045, 1090]
    assert heartbeat.silence() is None


def get(url: str) -> tuple[int, str]:
    """The status and body of ``GET url``."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), str(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, str(error.read().decode())
    except OSError:
        return 0, ""


def test_probes_are_served_beside_the_metrics() -> None:
    """200 ``ok``, or 503 with the reason on one line; /metrics as before."""
    registry = CollectorRegistry()
    ProducerMetrics(registry).ticks_accepted.inc(2)
    clock = Clock()
    health = Health(clock=clock)
    health.heartbeat("producer", 60)
    reasons: list[str | None] = [None]
    health.check(lambda: reasons[-1])
    server = serve_metrics(registry, free_port(), addr="127.0.0.1", health=health)
    assert server is not None
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/readyz") == (200, "ok\n")
        reasons.append("redis: Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        assert get(base + "/readyz") == (503, reasons[-1] + "\n")
        assert get(base + "/healthz") == (200, "ok\n")
        clock.now += 61
        assert get(base + "/healthz") == (503, "producer: no heartbeat for 61 s\n")
        assert "marginwatch_ticks_accepted_total 2.0" in get(base + "/metrics")[1].splitlines()
    finally:
        server.shutdown()
        server.server_close()


def test_redis_and_broker_checks_name_what_does_not_answer(redis_server: RedisServer) -> None:
    """A live Redis and broker: ready; a port nothing listens on: the reason names it."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    assert redis_reachable(fail_fast_redis(redis_server.url))() is None
    assert broker_reachable(make_celery(Settings(), redis_server.url))() is None
    assert (redis_reachable(fail_fast_redis(nowhere))() or "").startswith("redis: Error 111")
    broker = broker_reachable(make_celery(Settings(), nowhere))()
    assert (broker or "").startswith("broker: Error 111")


def test_a_worker_is_ready_once_its_books_are_loaded(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Each served partition's book must be in memory."""
    store_accounts(redis_client, BOOK, 2)
    settings = Settings(redis_url=redis_server.url, partitions=2)
    runtime = WorkerRuntime(settings, redis_client, dict(default_tables()),
                            make_celery(settings, redis_server.url))  # fmt: skip
    check = books_loaded(runtime, [0, 1])
    assert check() == "books: partitions 0, 1 not loaded yet"
    runtime.book(1)
    assert check() == "books: partitions 0 not loaded yet"
    runtime.book(0)
    assert check() is None


# The daemons of one partition, each with its metrics port, on a private Redis.
DAEMONS = {
    "worker": ["worker", "--partitions", "0"],
    "executor": ["executor", "--queues", "actions"],
    "webhooks": ["executor", "--queues", "webhooks"],
    "producer": ["producer", "--symbols", "BTCUSDT", "--rate", "1"],
}


@pytest.fixture
def private_redis() -> Iterator[list[RedisServer]]:
    """A redis-server of this test alone (it is killed and started again); the last started
    is the running one."""
    servers = [start_redis_server()]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def ports(private_redis: list[RedisServer], tmp_path: Path) -> Iterator[dict[str, int]]:
    """Every daemon of ``DAEMONS`` running on the private Redis; their metrics ports."""
    client = redis.Redis.from_url(private_redis[0].url)
    store_accounts(client, BOOK, 1)
    Publisher(client).publish([Tick("BTCUSDT", Decimal(50_000), time.time_ns() // 1_000_000)])
    kept = {k: v for k, v in os.environ.items() if not k.startswith("MARGINWATCH_")}
    env = {**kept, "MARGINWATCH_REDIS_URL": private_redis[0].url, "MARGINWATCH_PARTITIONS": "1"}
    found = {name: free_port() for name in DAEMONS}
    processes = [
        subprocess.Popen([sys.executable, "-m", "marginwatch", *args],
                         env={**env, "MARGINWATCH_METRICS_PORT": str(found[name])},
                         stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
        for name, args in DAEMONS.items()
    ]  # fmt: skip
    yield found
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


def answers(ports: dict[str, int], path: str) -> dict[str, tuple[int, str]]:
    return {name: get(f"http://127.0.0.1:{port}{path}") for name, port in ports.items()}


def all_answer(ports: dict[str, int], path: str, status: int, start: str = "") -> bool:
    return all(code == status and body.startswith(start)
               for code, body in answers(ports, path).values())  # fmt: skip


def test_daemons_are_not_ready_without_redis_and_ready_again_when_it_is_back(
    ports: dict[str, int], private_redis: list[RedisServer]
) -> None:
    """Worker, executors and producer: ready; Redis killed: /readyz 503 naming Redis while
    /healthz stays 200 (alive, waiting for it); Redis started again on its port: ready."""
    wait_for(lambda: all_answer(ports, "/readyz", 200, "ok"),
             lambda: f"every daemon ready: {answers(ports, '/readyz')}", timeout=120)  # fmt: skip
    assert all_answer(ports, "/healthz", 200, "ok")
    killed = private_redis[0]
    killed.process.kill()
    killed.process.wait()
    wait_for(lambda: all_answer(ports, "/readyz", 503, "redis: "),
             lambda: f"every daemon unready: {answers(ports, '/readyz')}", timeout=30)  # fmt: skip
    assert all_answer(ports, "/healthz", 200, "ok"), answers(ports, "/healthz")
    private_redis.append(start_redis_server(port=killed.port))
    wait_for(lambda: all_answer(ports, "/readyz", 200, "ok"),
             lambda: f"ready again: {answers(ports, '/readyz')}", timeout=120)  # fmt: skip
    assert all_answer(ports, "/healthz", 200, "ok")

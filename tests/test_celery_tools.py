"""Celery's own tools on a running deployment: ``celery -A marginwatch`` configured from the
``MARGINWATCH_*`` settings (never at import), remote control answered by the real daemons, and
task events for Flower and celery-exporter behind ``MARGINWATCH_TASK_EVENTS``."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from marginwatch.base.settings import Settings, read_settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import TASK_EVALUATE_PARTITION, attachable_app, make_celery
from marginwatch.runtime.process import celery_worker_flags
from marginwatch.state.accounts import store_accounts
from tests.polling import wait_for
from tests.test_crash_points import BOOK

CELERY = Path(sys.executable).parent / "celery"
# What Flower and celery-exporter read: an evaluation sent, received and done, and heartbeats.
MONITORED_EVENTS = {"task-sent", "task-received", "task-succeeded", "worker-heartbeat"}


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without its MARGINWATCH_* variables, plus ``settings``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("MARGINWATCH_")}
    return {**kept, **settings}


@pytest.fixture
def environment(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, str]:
    """One partition holding an account with a mark, and the settings that reach it."""
    store_accounts(redis_client, BOOK, 1)
    Publisher(redis_client).publish([Tick("BTCUSDT", Decimal(50_000), time.time_ns() // 10**6)])
    return clean_environment(MARGINWATCH_REDIS_URL=redis_server.url, MARGINWATCH_PARTITIONS="1")


class Daemons:
    """``marginwatch`` daemons as subprocesses, terminated at the end."""

    def __init__(self, environment: dict[str, str], directory: Path) -> None:
        self.environment, self.directory = environment, directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, **settings: str) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "marginwatch", *args, "--loglevel", "WARNING"]
        self.processes.append(subprocess.Popen(command, env={**self.environment, **settings},
                                               stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)


@pytest.fixture
def daemons(environment: dict[str, str], tmp_path: Path) -> Iterator[Daemons]:
    running = Daemons(environment, tmp_path)
    yield running
    running.stop()


def test_importing_the_app_reads_no_setting() -> None:
    """``import marginwatch.celery`` works with bad settings; reading its configuration names
    the bad one."""
    code = "import marginwatch.celery as m; print('imported', flush=True); m.app.conf.broker_url"
    environment = clean_environment(MARGINWATCH_PARTITIONS="abc")
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.stdout == "imported\n"
    assert "ConfigurationError: MARGINWATCH_PARTITIONS: Input should be a valid integer" in (
        result.stderr
    )


def test_the_attachable_app_is_configured_like_the_daemons(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the environment: the daemons' broker, transport options, remote control and task
    event settings."""
    url = "redis://:secret@127.0.0.1:1/0"
    monkeypatch.setenv("MARGINWATCH_REDIS_URL", url)
    monkeypatch.setenv("MARGINWATCH_VISIBILITY_TIMEOUT_SECONDS", "42")
    monkeypatch.setenv("MARGINWATCH_TASK_EVENTS", "true")
    attached, daemon = attachable_app().conf, make_celery(read_settings(), url).conf
    for key in ("broker_url", "broker_transport_options", "accept_content", "task_acks_late",
                "worker_enable_remote_control", "worker_send_task_events",
                "task_send_sent_event"):  # fmt: skip
        assert attached[key] == daemon[key], key
    assert attached.broker_transport_options["visibility_timeout"] == 42
    assert (attached.worker_send_task_events, attached.task_send_sent_event) == (True, True)


def test_task_events_are_off_by_default() -> None:
    """No task events, no event heartbeats; neither gossip nor mingle in any case."""
    default, events = Settings(), Settings(task_events=True)
    conf = make_celery(default, "redis://127.0.0.1:1/0").conf
    assert (conf.worker_send_task_events, conf.task_send_sent_event) == (False, False)
    assert conf.worker_enable_remote_control is True
    assert celery_worker_flags(default) == [
        "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    assert celery_worker_flags(events) == ["--without-gossip", "--without-mingle"]


def pongs(environment: dict[str, str]) -> dict[str, Any]:
    """The replies to ``celery -A marginwatch inspect ping``, by node (none: empty)."""
    command = [str(CELERY), "-A", "marginwatch", "inspect", "ping", "--json", "--timeout", "2"]
    result = subprocess.run(command, env=environment, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    found: dict[str, Any] = json.loads(result.stdout) if result.returncode == 0 else {}
    return found


def test_inspect_ping_is_answered_by_a_worker_and_an_executor(
    daemons: Daemons, environment: dict[str, str]
) -> None:
    """The real ``celery inspect ping`` on the deployment's settings: both daemons answer pong."""
    daemons.start("worker", "worker", "--partitions", "0")
    daemons.start("executor", "executor")
    replies = wait_for(lambda: (found := pongs(environment)) and len(found) == 2 and found,
                       "pong from the worker and the executor", timeout=120)  # fmt: skip
    assert sorted(name.split("@")[0].split("-")[0] for name in replies) == [
        "executor", "partitions"]  # fmt: skip
    assert all(reply == {"ok": "pong"} for reply in replies.values())


def test_task_events_reach_a_monitor_when_switched_on(
    daemons: Daemons, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MARGINWATCH_TASK_EVENTS=true: the worker's evaluations are sent, received and succeed as
    task events, and it sends heartbeats, to any receiver of the deployment's events."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    daemons.start("worker", "worker", "--partitions", "0", MARGINWATCH_TASK_EVENTS="true")
    app = attachable_app()
    seen: set[str] = set()
    deadline = time.monotonic() + 120

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] != "task-received" or event["name"] == TASK_EVALUATE_PARTITION:
            seen.add(event["type"])
        receiver.should_stop = seen >= MONITORED_EVENTS or time.monotonic() > deadline

    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": on_event})
        with contextlib.suppress(TimeoutError):  # no event at all for 120 s
            receiver.capture(timeout=120, wakeup=True)
    assert seen >= MONITORED_EVENTS, f"within 120 s only {sorted(seen)}"

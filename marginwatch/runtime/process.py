"""What one worker or executor process holds, and how a daemon runs: Redis, the Celery app,
the bracket tables, its metrics served, a supervised helper thread, Celery's solo pool.

Each daemon runs a Celery worker with the solo pool (one task at a time in the main thread, so
the in-memory partition books need no locks and metrics need no multiprocess mode) and a helper
thread: the dispatcher for a partition worker, the account-events applier for the executor.
With ``MARGINWATCH_METRICS_PORT`` set, each serves its own Prometheus registry on that port
(docs/metrics.md), with ``/healthz`` and ``/readyz`` beside it (``marginwatch.base.health``).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
import redis
from celery import Celery, bootsteps
from celery.signals import setup_logging
from prometheus_client import CollectorRegistry

from marginwatch.base import crash
from marginwatch.base.health import Check, Health, Heartbeat
from marginwatch.base.metrics import metrics_url, serve_metrics
from marginwatch.base.redaction import redact_url
from marginwatch.base.settings import (
    ConfigurationError,
    Settings,
    bracket_tables,
    broker_url,
    env_name,
    redis_url,
)
from marginwatch.engine.brackets import BracketTable
from marginwatch.runtime.celery_app import make_celery
from marginwatch.runtime.health import FAIL_FAST_TIMEOUT_SECONDS, redis_reachable
from marginwatch.state.accounts import ensure_partition_count
from marginwatch.state.connection import open_redis

log = logging.getLogger("marginwatch")

HELPER_RESTART_MAX_SECONDS = 30.0
# The consumer's event loop beats every second while idle; a task holds it up to its time limit.
CONSUMER_BEAT_SECONDS = 1.0
CONSUMER_SLACK_SECONDS = 30.0


@dataclass
class Runtime:
    """Settings, Redis, the bracket tables and the Celery app of one daemon process."""

    settings: Settings
    client: redis.Redis
    tables: dict[str, BracketTable]
    app: Celery


def connect(settings: Settings) -> Runtime:
    """Redis (checked for the deployment's P), the Celery app (which leaves the daemon's logging
    as configured) and the bracket tables."""
    crash.arm(settings.crash_at)
    client = open_redis(redis_url(settings))
    ensure_partition_count(client, settings.partitions)
    tables = bracket_tables(settings)
    broker = broker_url(settings)
    log.info("Redis at %s, broker %s, %d partitions", redact_url(redis_url(settings)),
             redact_url(broker), settings.partitions)  # fmt: skip
    setup_logging.connect(_logging_configured, weak=False)
    return Runtime(settings, client, tables, make_celery(settings, broker))


def _logging_configured(**_signal: Any) -> None:
    """Celery's ``setup_logging`` receiver: with one connected, a starting Celery worker neither
    configures the root logger nor sets its level nor redirects stdout and stderr."""


@contextmanager
def metrics_served(
    settings: Settings, registry: CollectorRegistry, health: Health | None = None
) -> Iterator[str | None]:
    """Serve ``registry`` (and ``health``) on ``settings.metrics_port`` (if set) while inside;
    yields the metrics URL."""
    try:
        server = serve_metrics(registry, settings.metrics_port, health=health)
    except OSError as error:
        raise ConfigurationError(
            f"{env_name('metrics_port')}={settings.metrics_port}: cannot listen ({error.strerror})"
        ) from None
    if server is None:
        yield None
        return
    url = metrics_url(server)
    log.info("serving metrics on %s", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def celery_health(settings: Settings, app: Celery, state: redis.Redis) -> Health:
    """The health of a daemon consuming with ``app``: its consumer's heartbeat (paused until
    it consumes, and while it reconnects), then Redis (``state``, a fail-fast client), the
    broker and the consumer ready."""
    health = Health()
    stale_after = settings.task_time_limit_seconds + CONSUMER_SLACK_SECONDS
    consumer = health.heartbeat("celery consumer", stale_after, paused=True)
    app.steps["consumer"].add(consumer_heartbeat_step(consumer))
    health.check(redis_reachable(state))
    health.check(broker_reachable(app))
    health.check(lambda: "celery: not consuming (starting, or reconnecting to the broker)"
                 if consumer.paused else None)  # fmt: skip
    return health


def consumer_heartbeat_step(heartbeat: Heartbeat) -> type[bootsteps.StartStopStep]:
    """A step of Celery's consumer: from its start (queues consumed), its event loop's timer
    beats ``heartbeat`` every second; stopped (the broker lost, or shutting down), it pauses
    ``heartbeat`` until the consumer starts again."""

    class ConsumerHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = ("celery.worker.consumer:Tasks",)
        entry: Any = None  # the timer's repeated call

        def start(self, parent: Any) -> None:
            heartbeat.resume()
            self.entry = parent.timer.call_repeatedly(CONSUMER_BEAT_SECONDS, heartbeat.beat)

        def stop(self, parent: Any) -> None:
            heartbeat.pause()
            if self.entry is not None:
                self.entry.cancel()

        shutdown = stop

    return ConsumerHeartbeat


def broker_reachable(app: Celery) -> Check:
    """Ready when a new connection to ``app``'s broker opens within a second."""
    timeouts = {"socket_timeout": FAIL_FAST_TIMEOUT_SECONDS,
                "socket_connect_timeout": FAIL_FAST_TIMEOUT_SECONDS}  # fmt: skip

    def check() -> str | None:
        connection = app.connection_for_read(
            connect_timeout=FAIL_FAST_TIMEOUT_SECONDS, transport_options=timeouts
        )
        try:
            connection.ensure_connection(max_retries=0)
        except (kombu.exceptions.KombuError, *connection.connection_errors, OSError) as error:
            return f"broker: {error}"
        finally:
            connection.release()
        return None

    return check


def run_celery(app: Celery, queues: Sequence[str], name: str, settings: Settings) -> None:
    """Consume ``queues`` with the solo pool until stopped; no start-up banner on stdout when
    the log lines are JSON."""
    quiet = ["--quiet"] if settings.log_format == "json" else []  # an option of "celery"
    app.worker_main(
        [*quiet, "worker", "--pool=solo", "--concurrency=1",
         "-Q", ",".join(queues), "-n", f"{name}@{socket.gethostname()}",
         *celery_worker_flags(settings)]
    )  # fmt: skip


def celery_worker_flags(settings: Settings) -> list[str]:
    """No gossip, no mingle (no chatter between workers, no wait at start); no event
    heartbeats unless task events are on: Flower and celery-exporter take a worker without
    heartbeats for offline. Remote control stays on (``celery inspect ping``)."""
    heartbeat = [] if settings.task_events else ["--without-heartbeat"]
    return ["--without-gossip", "--without-mingle", *heartbeat]


def supervised(target: Callable[[threading.Event], None], stop: threading.Event) -> None:
    """Run ``target`` until ``stop``; a Redis error restarts it after a backoff (0.5 s doubling
    to 30 s), so the helper thread never dies while the Celery worker carries on without it."""
    delay = 0.5
    while not stop.is_set():
        try:
            target(stop)
            return
        except redis.RedisError:
            log.exception("helper thread lost Redis; restarting in %.1f s", delay)
            stop.wait(delay)
            delay = min(delay * 2, HELPER_RESTART_MAX_SECONDS)


def beating(
    target: Callable[[threading.Event], None], heartbeat: Heartbeat
) -> Callable[[threading.Event], None]:
    """``target``, beating ``heartbeat`` as it starts: a loop that Redis errors keep
    restarting (``supervised``, at most 30 s apart) stays alive while it waits for Redis."""

    def run(stop: threading.Event) -> None:
        heartbeat.beat()
        target(stop)

    return run


def with_threads(
    targets: Sequence[Callable[[threading.Event], None]], body: Callable[[], None]
) -> None:
    """Run ``body`` with each of ``targets`` supervised in a helper thread, stopped when
    ``body`` ends."""
    stop = threading.Event()
    threads = [threading.Thread(target=supervised, args=(t, stop), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    try:
        body()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)

"""The ``marginwatch worker`` and ``marginwatch executor`` daemons: thin wrappers over Celery.

Each runs a Celery worker with the solo pool (one task at a time in the main thread, so the
in-memory partition books need no locks and metrics need no multiprocess mode) and a helper
thread: the dispatcher for a partition worker, the account-events applier for the executor.
With ``MARGINWATCH_METRICS_PORT`` set, each serves its own Prometheus registry on that port
(docs/metrics.md).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import redis
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from marginwatch.engine.brackets import BracketTable, default_tables, load_bracket_file
from marginwatch.metrics import ExecutorMetrics, WorkerMetrics, metrics_url, serve_metrics
from marginwatch.settings import Settings
from marginwatch.state.accounts import ensure_partition_count
from marginwatch.state.applier import AppliedCounts, run_applier
from worker.celery_app import (
    ACTIONS_QUEUE,
    MARGIN_CALLS_QUEUE,
    WEBHOOKS_QUEUE,
    consume_in_listed_order,
    make_celery,
    partition_queue,
)
from worker.dispatch import Dispatcher
from worker.instrumentation import counting_redis_errors, insurance_fund_reader, observe_applied
from worker.tasks import Runtime, register_tasks

log = logging.getLogger("marginwatch")

SCRAPE_TIMEOUT = 1.0  # seconds


class ConfigurationError(RuntimeError):
    """A daemon cannot start with this configuration; the message says why."""


def parse_partitions(spec: str, partition_count: int) -> list[int]:
    """``"0-7"``, ``"1,3,5"`` or ``"2"`` into partition numbers, each below ``partition_count``."""
    chosen: set[int] = set()
    try:
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            chosen.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigurationError(f"--partitions: not a list of ranges: {spec!r}") from None
    outside = sorted(p for p in chosen if not 0 <= p < partition_count)
    if not chosen or outside:
        raise ConfigurationError(
            f"--partitions: {outside or spec} not within 0-{partition_count - 1} "
            f"(MARGINWATCH_PARTITIONS={partition_count})"
        )
    return sorted(chosen)


def redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise ConfigurationError("MARGINWATCH_REDIS_URL is not set")
    return settings.redis_url


def bracket_tables(settings: Settings) -> dict[str, BracketTable]:
    if settings.brackets_file:
        return load_bracket_file(settings.brackets_file)
    return dict(default_tables())


def _runtime(settings: Settings, loglevel: str) -> Runtime:
    """Redis, the Celery app (its logging set up now, so start-up lines are logged) and tasks."""
    url = redis_url(settings)
    client = redis.Redis.from_url(url)
    ensure_partition_count(client, settings.partitions)
    app = make_celery(settings, url)
    app.log.setup_logging_subsystem(loglevel=loglevel)
    runtime = Runtime(settings, client, bracket_tables(settings), app)
    register_tasks(app, runtime)
    return runtime


@contextmanager
def metrics_served(settings: Settings, registry: CollectorRegistry) -> Iterator[str | None]:
    """Serve ``registry`` on ``settings.metrics_port`` (if set) while inside; yields the URL."""
    try:
        server = serve_metrics(registry, settings.metrics_port)
    except OSError as error:
        raise ConfigurationError(
            f"MARGINWATCH_METRICS_PORT={settings.metrics_port}: cannot listen ({error.strerror})"
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


def _run_celery(runtime: Runtime, queues: Sequence[str], name: str, loglevel: str) -> None:
    runtime.app.worker_main(
        ["worker", "--pool=solo", "--concurrency=1", f"--loglevel={loglevel}",
         "-Q", ",".join(queues), "-n", f"{name}@{socket.gethostname()}",
         "--without-gossip", "--without-mingle", "--without-heartbeat"]
    )  # fmt: skip


HELPER_RESTART_MAX_SECONDS = 30.0


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


def _with_thread(target: Callable[[threading.Event], None], body: Callable[[], None]) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=supervised, args=(target, stop), daemon=True)
    thread.start()
    try:
        body()
    finally:
        stop.set()
        thread.join(timeout=5)


def run_worker(settings: Settings, partition_spec: str, loglevel: str = "INFO") -> None:
    """Evaluate ``partition_spec``'s partitions until stopped."""
    partitions = parse_partitions(partition_spec, settings.partitions)
    runtime = _runtime(settings, loglevel)
    registry = CollectorRegistry()
    runtime.worker_metrics = metrics = WorkerMetrics(registry)
    metrics.start_partitions(partitions)
    dispatcher = Dispatcher(
        runtime.client,
        partitions,
        runtime.enqueue_evaluation,
        on_pending=lambda armed: metrics.set_pending(armed, pending=True),
    )

    def dispatch(stop: threading.Event) -> None:
        with counting_redis_errors(metrics.redis_errors):
            dispatcher.run(stop)

    queues = [partition_queue(p) for p in partitions]
    name = f"partitions-{partition_spec.replace(',', '_')}"
    with metrics_served(settings, registry):
        _with_thread(dispatch, lambda: _run_celery(runtime, queues, name, loglevel))


# "actions": margin calls first, then liquidations (consumed in this order).
EXECUTOR_QUEUES = {"actions": (MARGIN_CALLS_QUEUE, ACTIONS_QUEUE), "webhooks": (WEBHOOKS_QUEUE,)}


def parse_queues(spec: str) -> list[str]:
    """``"actions,webhooks"`` into Celery queue names."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(EXECUTOR_QUEUES))
    if unknown or not names:
        raise ConfigurationError(f"--queues: expected actions and/or webhooks, got {spec!r}")
    return [queue for name in names for queue in EXECUTOR_QUEUES[name]]


def _executor_metrics(
    settings: Settings, queues: Sequence[str], registry: CollectorRegistry, symbols: Sequence[str]
) -> ExecutorMetrics:
    """The executor's metrics; the one that liquidates (actions queue) exports the fund, read
    at each scrape with a client that fails fast (a scrape never hangs on Redis)."""
    metrics = ExecutorMetrics(registry, symbols)
    if ACTIONS_QUEUE in queues:
        scrape_client = redis.Redis.from_url(
            redis_url(settings),
            socket_timeout=SCRAPE_TIMEOUT,
            socket_connect_timeout=SCRAPE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        metrics.insurance_fund.read = insurance_fund_reader(scrape_client)
    return metrics


def run_executor(
    settings: Settings,
    queues: Sequence[str] = (MARGIN_CALLS_QUEUE, ACTIONS_QUEUE, WEBHOOKS_QUEUE),
    loglevel: str = "INFO",
) -> None:
    """Execute actions until stopped; with the actions queue, also apply account events."""
    runtime = _runtime(settings, loglevel)
    consume_in_listed_order(runtime.app)
    registry = CollectorRegistry()
    runtime.executor_metrics = metrics = _executor_metrics(
        settings, queues, registry, sorted(runtime.tables)
    )
    consumer = f"executor-{socket.gethostname()}"
    name = "executor-" + "-".join(queue.rsplit(".", 1)[-1] for queue in queues)

    def on_step(counts: AppliedCounts) -> None:
        observe_applied(metrics, counts)

    def apply_events(stop: threading.Event) -> None:
        if ACTIONS_QUEUE in queues:
            with counting_redis_errors(metrics.redis_errors):
                run_applier(runtime.client, runtime.tables, settings.partitions, consumer, stop,
                            on_step=on_step)  # fmt: skip

    with metrics_served(settings, registry):
        _with_thread(apply_events, lambda: _run_celery(runtime, queues, name, loglevel))

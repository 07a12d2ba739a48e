"""The ``marginwatch executor`` daemon: Celery's solo pool on the action and/or webhook
queues, with the account-events applier in a supervised helper thread (with the actions)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence

import redis
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from marginwatch.base.metrics import ExecutorMetrics
from marginwatch.base.settings import ConfigurationError, Settings, redis_url
from marginwatch.executor.instrumentation import insurance_fund_reader, observe_applied
from marginwatch.executor.tasks import ExecutorRuntime, register_tasks
from marginwatch.runtime.celery_app import (
    ACTIONS_QUEUE,
    MARGIN_CALLS_QUEUE,
    WEBHOOKS_QUEUE,
    consume_in_listed_order,
)
from marginwatch.runtime.observe import counting_redis_errors
from marginwatch.runtime.process import connect, metrics_served, run_celery, with_thread
from marginwatch.state.applier import AppliedCounts, run_applier

SCRAPE_TIMEOUT_SECONDS = 1.0
# "actions": margin calls first, then liquidations (consumed in this order).
EXECUTOR_QUEUES = {"actions": (MARGIN_CALLS_QUEUE, ACTIONS_QUEUE), "webhooks": (WEBHOOKS_QUEUE,)}
DEFAULT_QUEUES = "actions,webhooks"


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
            socket_timeout=SCRAPE_TIMEOUT_SECONDS,
            socket_connect_timeout=SCRAPE_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        metrics.insurance_fund.read = insurance_fund_reader(scrape_client)
    return metrics


def run_executor(settings: Settings, queues: Sequence[str], loglevel: str = "INFO") -> None:
    """Execute actions until stopped; with the actions queue, also apply account events."""
    base = connect(settings, loglevel)
    consume_in_listed_order(base.app)
    registry = CollectorRegistry()
    metrics = _executor_metrics(settings, queues, registry, sorted(base.tables))
    runtime = ExecutorRuntime(base.settings, base.client, base.tables, base.app, metrics=metrics)
    register_tasks(runtime.app, runtime)
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
        with_thread(apply_events, lambda: run_celery(runtime.app, queues, name, loglevel))

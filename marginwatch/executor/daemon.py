"""The ``marginwatch executor`` daemon: Celery's solo pool on its partitions' action queues with
the account-events applier of its partitions in a supervised helper thread (role ``actions``),
and/or the webhook deliverer of their outboxes (role ``webhooks``: a helper thread beside the
actions, or the whole process without them).

Two executors may serve the same partitions: Celery gives each message to one of them, every
effect is guarded in Redis (episode keys, liquidation idempotency keys), and one applier per
partition holds the partition's lease while the other waits to take it over.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from marginwatch.base.metrics import ExecutorMetrics
from marginwatch.base.settings import ConfigurationError, Settings, redis_url
from marginwatch.executor.instrumentation import (
    insurance_fund_reader,
    observe_applied,
    oldest_webhook_delivery_reader,
)
from marginwatch.executor.outbox import Deliverer, run_deliverer
from marginwatch.executor.tasks import ExecutorRuntime, register_tasks
from marginwatch.runtime.celery_app import consume_in_listed_order, executor_queues
from marginwatch.runtime.observe import counting_redis_errors
from marginwatch.runtime.process import (
    connect,
    metrics_served,
    run_celery,
    supervised,
    with_threads,
)
from marginwatch.state.applier import AppliedCounts, run_applier
from marginwatch.state.connection import open_redis

SCRAPE_TIMEOUT_SECONDS = 1.0
ROLES = ("actions", "webhooks")


def parse_roles(spec: str) -> list[str]:
    """``"actions,webhooks"``: what the executor does (its ``--queues``)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ROLES))
    if unknown or not names:
        raise ConfigurationError(f"--queues: expected actions and/or webhooks, got {spec!r}")
    return [role for role in ROLES if role in names]


def _executor_metrics(
    settings: Settings,
    roles: Sequence[str],
    partitions: Sequence[int],
    registry: CollectorRegistry,
    symbols: Sequence[str],
) -> ExecutorMetrics:
    """The executor's metrics; its partitions' oldest webhook delivery and, for one that
    liquidates, their ledgers of the fund, read at each scrape with a client that fails fast
    (a scrape never hangs on Redis)."""
    metrics = ExecutorMetrics(registry, symbols)
    scrape_client = open_redis(
        redis_url(settings),
        socket_timeout=SCRAPE_TIMEOUT_SECONDS,
        socket_connect_timeout=SCRAPE_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    metrics.oldest_webhook_delivery.read = oldest_webhook_delivery_reader(scrape_client, partitions)
    if "actions" in roles:
        metrics.insurance_fund.read = insurance_fund_reader(scrape_client, partitions)
    return metrics


def run_executor(settings: Settings, roles: Sequence[str], partitions: Sequence[int]) -> None:
    """Execute the partitions' actions until stopped; with them, apply their account events."""
    if (
        settings.webhook_urls
        and not settings.webhook_secret
        and not settings.webhook_allow_unsigned
    ):
        raise ConfigurationError(
            "MARGINWATCH_WEBHOOK_SECRET is empty while MARGINWATCH_WEBHOOK_URLS is set: set a "
            "secret (receivers verify the signature), or MARGINWATCH_WEBHOOK_ALLOW_UNSIGNED=true"
        )
    base = connect(settings)
    consume_in_listed_order(base.app)
    registry = CollectorRegistry()
    metrics = _executor_metrics(settings, roles, partitions, registry, sorted(base.tables))
    runtime = ExecutorRuntime(base.settings, base.client, base.tables, base.app, metrics=metrics)
    register_tasks(runtime.app, runtime)
    # Unique per process: two executors on one host must not share a consumer name.
    consumer = f"executor-{socket.gethostname()}-{os.getpid()}"
    name = f"executor-{'-'.join(roles)}-{consumer}"

    def on_step(counts: AppliedCounts) -> None:
        observe_applied(metrics, counts)

    def apply_events(stop: threading.Event) -> None:
        with counting_redis_errors(metrics.redis_errors):
            run_applier(runtime.client, runtime.tables, settings.partitions, partitions,
                        consumer, stop, on_step=on_step)  # fmt: skip

    def deliver(stop: threading.Event) -> None:
        count = metrics.webhook_deliveries.labels
        deliverer = Deliverer(runtime.client, settings, partitions, consumer,
                              lambda result: count(result).inc())  # fmt: skip
        with counting_redis_errors(metrics.redis_errors):
            run_deliverer(deliverer, stop)

    with metrics_served(settings, registry):
        if "actions" not in roles:
            supervised(deliver, threading.Event())
            return
        helpers = [apply_events, *([deliver] if "webhooks" in roles else [])]
        queues = executor_queues(partitions)
        with_threads(helpers, lambda: run_celery(runtime.app, queues, name, settings))

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

import redis
from celery import Celery
from prometheus_client import CollectorRegistry

from marginwatch.base.health import Health
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
from marginwatch.runtime.health import LOOP_STALE_AFTER_SECONDS, fail_fast_redis, redis_reachable
from marginwatch.runtime.observe import counting_redis_errors
from marginwatch.runtime.process import (
    beating,
    celery_health,
    connect,
    metrics_served,
    run_celery,
    supervised,
    with_threads,
)
from marginwatch.state.applier import AppliedCounts, run_applier

ROLES = ("actions", "webhooks")
# The helper loop each role runs, as /healthz names it.
APPLIER, DELIVERER = "account-events applier", "webhook deliverer"
LOOP_OF_ROLE = dict(zip(ROLES, (APPLIER, DELIVERER), strict=True))


def parse_roles(spec: str) -> list[str]:
    """``"actions,webhooks"``: what the executor does (its ``--queues``)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ROLES))
    if unknown or not names:
        raise ConfigurationError(f"--queues: expected actions and/or webhooks, got {spec!r}")
    return [role for role in ROLES if role in names]


def _executor_metrics(
    scrape_client: redis.Redis,
    roles: Sequence[str],
    partitions: Sequence[int],
    registry: CollectorRegistry,
    symbols: Sequence[str],
) -> ExecutorMetrics:
    """The executor's metrics; its partitions' oldest webhook delivery and, for one that
    liquidates, their ledgers of the fund, read at each scrape with a client that fails fast
    (a scrape never hangs on Redis)."""
    metrics = ExecutorMetrics(registry, symbols)
    metrics.oldest_webhook_delivery.read = oldest_webhook_delivery_reader(scrape_client, partitions)
    if "actions" in roles:
        metrics.insurance_fund.read = insurance_fund_reader(scrape_client, partitions)
    return metrics


def require_webhook_secret(settings: Settings) -> None:
    """Refuse unsigned webhooks unless a setting says so explicitly."""
    if settings.webhook_urls and not (settings.webhook_secret or settings.webhook_allow_unsigned):
        raise ConfigurationError(
            "MARGINWATCH_WEBHOOK_SECRET is empty while MARGINWATCH_WEBHOOK_URLS is set: set a "
            "secret (receivers verify the signature), or MARGINWATCH_WEBHOOK_ALLOW_UNSIGNED=true"
        )


def run_executor(settings: Settings, roles: Sequence[str], partitions: Sequence[int]) -> None:
    """Execute the partitions' actions until stopped; with them, apply their account events."""
    require_webhook_secret(settings)
    base = connect(settings)
    consume_in_listed_order(base.app)
    registry = CollectorRegistry()
    scrape_client = fail_fast_redis(redis_url(settings))  # scrapes and /readyz never hang
    metrics = _executor_metrics(scrape_client, roles, partitions, registry, sorted(base.tables))
    runtime = ExecutorRuntime(base.settings, base.client, base.tables, base.app, metrics=metrics)
    register_tasks(runtime.app, runtime)
    health = _executor_health(settings, roles, runtime.app, scrape_client)
    # Unique per process: two executors on one host must not share a consumer name.
    consumer = f"executor-{socket.gethostname()}-{os.getpid()}"
    name = f"executor-{'-'.join(roles)}-{consumer}"
    beats = {loop: health.heartbeat(loop, LOOP_STALE_AFTER_SECONDS)
             for role, loop in LOOP_OF_ROLE.items() if role in roles}  # fmt: skip

    def on_step(counts: AppliedCounts) -> None:
        observe_applied(metrics, counts)

    def apply_events(stop: threading.Event) -> None:
        with counting_redis_errors(metrics.redis_errors):
            run_applier(runtime.client, runtime.tables, settings.partitions, partitions,
                        consumer, stop, on_step=on_step, on_round=beats[APPLIER].beat)  # fmt: skip

    def deliver(stop: threading.Event) -> None:
        count = metrics.webhook_deliveries.labels
        deliverer = Deliverer(runtime.client, settings, partitions, consumer,
                              lambda result: count(result).inc())  # fmt: skip
        deliverer.on_round = beats[DELIVERER].beat
        with counting_redis_errors(metrics.redis_errors):
            run_deliverer(deliverer, stop)

    with metrics_served(settings, registry, health):
        if "actions" not in roles:
            supervised(beating(deliver, beats[DELIVERER]), threading.Event())
            return
        helpers = [beating(apply_events, beats[APPLIER])]
        if "webhooks" in roles:
            helpers.append(beating(deliver, beats[DELIVERER]))
        queues = executor_queues(partitions)
        with_threads(helpers, lambda: run_celery(runtime.app, queues, name, settings))


def _executor_health(
    settings: Settings, roles: Sequence[str], app: Celery, scrape_client: redis.Redis
) -> Health:
    """An executor taking actions: its Celery consumer's health; a webhook deliverer alone:
    Redis answering (each adds its helper loops' heartbeats)."""
    if "actions" in roles:
        return celery_health(settings, app, scrape_client)
    health = Health()
    health.check(redis_reachable(scrape_client))
    return health

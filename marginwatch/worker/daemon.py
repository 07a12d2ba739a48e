"""The ``marginwatch worker`` daemon: Celery's solo pool on the partitions' queues, with the
dispatcher in a supervised helper thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from marginwatch.base.health import Check
from marginwatch.base.metrics import WorkerMetrics
from marginwatch.base.partitions import parse_partitions
from marginwatch.base.settings import Settings, redis_url
from marginwatch.runtime.celery_app import partition_queue
from marginwatch.runtime.health import LOOP_STALE_AFTER_SECONDS, fail_fast_redis
from marginwatch.runtime.observe import counting_redis_errors
from marginwatch.runtime.process import (
    beating,
    celery_health,
    connect,
    metrics_served,
    run_celery,
    with_threads,
)
from marginwatch.worker.dispatch import Dispatcher
from marginwatch.worker.stress_metrics import stress_monitor
from marginwatch.worker.tasks import WorkerRuntime, register_tasks


def run_worker(settings: Settings, partition_spec: str) -> None:
    """Evaluate ``partition_spec``'s partitions until stopped."""
    partitions = parse_partitions(partition_spec, settings.partitions)
    base = connect(settings)
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    stress = stress_monitor(base.settings, base.tables, base.client, registry, partitions,
                            metrics.redis_errors)  # fmt: skip
    runtime = WorkerRuntime(base.settings, base.client, base.tables, base.app, metrics=metrics,
                            stress=stress)  # fmt: skip
    register_tasks(runtime.app, runtime)
    metrics.start_partitions(partitions)
    health = celery_health(settings, runtime.app, fail_fast_redis(redis_url(settings)))
    health.check(books_loaded(runtime, partitions))
    dispatching = health.heartbeat("dispatcher", LOOP_STALE_AFTER_SECONDS)
    dispatcher = Dispatcher(
        runtime.client,
        partitions,
        runtime.enqueue_evaluation,
        on_pending=lambda armed: metrics.set_pending(armed, pending=True),
        on_round=dispatching.beat,
    )

    def dispatch(stop: threading.Event) -> None:
        with counting_redis_errors(metrics.redis_errors):
            dispatcher.run(stop)

    queues = [partition_queue(p) for p in partitions]
    name = f"partitions-{partition_spec.replace(',', '_')}"
    with metrics_served(settings, registry, health):
        with_threads(
            [beating(dispatch, dispatching)],
            lambda: run_celery(runtime.app, queues, name, settings),
        )


def books_loaded(runtime: WorkerRuntime, partitions: Sequence[int]) -> Check:
    """Ready once every partition's book is in memory (each is read at its first evaluation,
    and again after Redis restarted or lost its data)."""

    def check() -> str | None:
        missing = [str(p) for p in partitions if p not in runtime.books]
        return f"books: partitions {', '.join(missing)} not loaded yet" if missing else None

    return check

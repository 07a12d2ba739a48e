"""Celery tasks: each a few lines handing this process's resources to a plain function."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from prometheus_client import CollectorRegistry

from marginwatch import keys
from marginwatch.engine import batch
from marginwatch.engine.brackets import BracketTable
from marginwatch.metrics import ExecutorMetrics, WorkerMetrics
from marginwatch.settings import Settings
from worker import actions, instrumentation, liquidation, webhooks
from worker.celery_app import (
    TASK_DELIVER_WEBHOOK,
    TASK_EVALUATE_PARTITION,
    TASK_LIQUIDATE,
    TASK_MARGIN_CALL,
    TASK_MARGIN_CALL_RESOLVED,
    TASK_MARGIN_CALLS,
    WEBHOOKS_QUEUE,
    partition_queue,
    queue_of,
)
from worker.evaluation import EvaluationOutcome, evaluate_partition
from worker.instrumentation import REDIS_ERRORS, counting_redis_errors
from worker.partition import PartitionBook

log = logging.getLogger("marginwatch.worker")

# shared=False: a task belongs to its own app only (Celery would add it to every app created
# later in the process, bound to this runtime).
RETRY = {"autoretry_for": REDIS_ERRORS, "retry_backoff": True, "retry_backoff_max": 30,
         "max_retries": 5, "shared": False}  # fmt: skip


def _unserved_worker_metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


def _unserved_executor_metrics() -> ExecutorMetrics:
    return ExecutorMetrics(CollectorRegistry())


@dataclass
class Runtime:
    """What one worker or executor process holds: settings, Redis, brackets, books, metrics.

    The daemon replaces the metrics it serves; the others stay on a private registry.
    """

    settings: Settings
    client: redis.Redis
    tables: dict[str, BracketTable]
    app: Celery
    books: dict[int, PartitionBook] = field(default_factory=dict)
    brackets: batch.BracketArrays | None = None
    worker_metrics: WorkerMetrics = field(default_factory=_unserved_worker_metrics)
    executor_metrics: ExecutorMetrics = field(default_factory=_unserved_executor_metrics)
    liquidation_map_due: instrumentation.Throttle = field(default_factory=instrumentation.Throttle)
    book_gauges_due: instrumentation.Throttle = field(default_factory=instrumentation.Throttle)

    def book(self, partition: int) -> PartitionBook:
        """The partition's book, loaded from Redis on first use."""
        if partition not in self.books:
            if self.brackets is None:
                self.brackets = batch.BracketArrays.from_tables(self.tables, sorted(self.tables))
            book = PartitionBook(partition, self.brackets, self.tables)
            book.load(self.client)
            self.books[partition] = book
        return self.books[partition]

    def send_action(self, task: str, payload: dict[str, Any] | list[dict[str, Any]]) -> None:
        self.app.send_task(task, args=[payload], queue=queue_of(task))

    def enqueue_evaluation(self, partition: int) -> None:
        self.app.send_task(
            TASK_EVALUATE_PARTITION, args=[partition], queue=partition_queue(partition)
        )


@dataclass
class ActionBatch:
    """The actions one evaluation found, sent when it ends: every margin call in one task
    first, then each resolution and liquidation (the executor drains margin calls first, so
    a pool's margin call still precedes its liquidation)."""

    runtime: Runtime
    margin_calls: list[dict[str, Any]] = field(default_factory=list)
    others: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, task: str, payload: dict[str, Any]) -> None:
        if task == TASK_MARGIN_CALL:
            self.margin_calls.append(payload)
        else:
            self.others.append((task, payload))

    def send(self) -> None:
        if self.margin_calls:
            self.runtime.send_action(TASK_MARGIN_CALLS, self.margin_calls)
        for task, payload in self.others:
            self.runtime.send_action(task, payload)


def run_evaluation(runtime: Runtime, partition: int) -> EvaluationOutcome:
    """Clear the pending flag first (later notices queue one more), evaluate, observe."""
    metrics, settings = runtime.worker_metrics, runtime.settings
    actions_found = ActionBatch(runtime)
    with counting_redis_errors(metrics.redis_errors):
        runtime.client.delete(keys.partition_pending(partition))
        metrics.set_pending([partition], pending=False)
        book = runtime.book(partition)
        outcome = evaluate_partition(book, runtime.client, settings, actions_found.add)
        actions_found.send()
    log.debug("partition %s: %s", partition, outcome)
    instrumentation.observe_evaluation(metrics, book, outcome, settings.stale_after_seconds)
    if runtime.book_gauges_due.due(partition):
        instrumentation.observe_book_gauges(metrics, book, outcome, settings.stale_after_seconds)
    if runtime.liquidation_map_due.due(partition):
        instrumentation.refresh_liquidation_map(metrics, book, outcome.marks, settings.venue)
    return outcome


def run_margin_call(runtime: Runtime, action: dict[str, Any]) -> str:
    """Margin call, then one webhook delivery task per configured URL."""
    with counting_redis_errors(runtime.executor_metrics.redis_errors):
        outcome, event = actions.execute_margin_call(runtime.client, runtime.tables,
                                                     runtime.settings, action)  # fmt: skip
    instrumentation.observe_margin_call(runtime.executor_metrics, action, outcome)
    if event is not None:
        for url in runtime.settings.webhook_urls:
            runtime.app.send_task(TASK_DELIVER_WEBHOOK, args=[url, json.dumps(event)],
                                  queue=WEBHOOKS_QUEUE)  # fmt: skip
    return outcome


def run_margin_calls(runtime: Runtime, batch: list[dict[str, Any]]) -> list[str]:
    """Margin calls of one evaluation, then one webhook delivery task per event and URL."""
    with counting_redis_errors(runtime.executor_metrics.redis_errors):
        results = actions.execute_margin_calls(runtime.client, runtime.tables, runtime.settings,
                                               batch)  # fmt: skip
    for action, (outcome, event) in zip(batch, results, strict=True):
        instrumentation.observe_margin_call(runtime.executor_metrics, action, outcome)
        for url in runtime.settings.webhook_urls if event is not None else ():
            runtime.app.send_task(TASK_DELIVER_WEBHOOK, args=[url, json.dumps(event)],
                                  queue=WEBHOOKS_QUEUE)  # fmt: skip
    return [outcome for outcome, _event in results]


def run_resolution(runtime: Runtime, action: dict[str, Any]) -> str:
    """End a margin-call episode if the exact ratio says so."""
    with counting_redis_errors(runtime.executor_metrics.redis_errors):
        outcome = actions.execute_resolution(runtime.client, runtime.tables, runtime.settings,
                                             action)  # fmt: skip
    instrumentation.observe_resolution(runtime.executor_metrics, action, outcome)
    return outcome


def run_liquidation(runtime: Runtime, action: dict[str, Any]) -> str:
    """Liquidate the pool if the exact path still says so."""
    with counting_redis_errors(runtime.executor_metrics.redis_errors):
        outcome = liquidation.liquidate(runtime.client, runtime.tables, runtime.settings, action)
    instrumentation.observe_liquidation(runtime.executor_metrics, action, outcome)
    return outcome.result


def run_webhook(runtime: Runtime, url: str, body: str) -> int:
    """Deliver one event (a failure raises; the task retries it)."""
    status = webhooks.deliver(url, body.encode(), runtime.settings.webhook_secret)
    runtime.executor_metrics.webhook_deliveries.labels("delivered").inc()
    return status


def register_tasks(app: Celery, runtime: Runtime) -> None:
    """Define the tasks on ``app``, bound to ``runtime``; count their retries and failures."""
    instrumentation.connect_task_signals(app, lambda: runtime.executor_metrics)

    @app.task(name=TASK_EVALUATE_PARTITION, **RETRY)
    def evaluate(partition: int) -> None:
        run_evaluation(runtime, partition)

    @app.task(name=TASK_MARGIN_CALL, **RETRY)
    def margin_call(action: dict[str, Any]) -> str:
        return run_margin_call(runtime, action)

    @app.task(name=TASK_MARGIN_CALLS, **RETRY)
    def margin_calls(batch: list[dict[str, Any]]) -> list[str]:
        return run_margin_calls(runtime, batch)

    @app.task(name=TASK_MARGIN_CALL_RESOLVED, **RETRY)
    def margin_call_resolved(action: dict[str, Any]) -> str:
        return run_resolution(runtime, action)

    @app.task(name=TASK_LIQUIDATE, **RETRY)
    def liquidate(action: dict[str, Any]) -> str:
        return run_liquidation(runtime, action)

    @app.task(name=TASK_DELIVER_WEBHOOK, autoretry_for=(webhooks.WebhookDeliveryError,),
              retry_backoff=True, retry_backoff_max=60, shared=False,
              max_retries=runtime.settings.webhook_max_attempts - 1)  # fmt: skip
    def deliver_webhook(url: str, body: str) -> int:
        return run_webhook(runtime, url, body)

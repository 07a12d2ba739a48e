"""Celery tasks: each a few lines handing this process's resources to a plain function."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from marginwatch import keys
from marginwatch.engine import batch
from marginwatch.engine.brackets import BracketTable
from marginwatch.settings import Settings
from worker import actions, liquidation, webhooks
from worker.celery_app import (
    ACTIONS_QUEUE,
    TASK_DELIVER_WEBHOOK,
    TASK_EVALUATE_PARTITION,
    TASK_LIQUIDATE,
    TASK_MARGIN_CALL,
    TASK_MARGIN_CALL_RESOLVED,
    WEBHOOKS_QUEUE,
    partition_queue,
)
from worker.evaluation import EvaluationOutcome, evaluate_partition
from worker.partition import PartitionBook

log = logging.getLogger("marginwatch.worker")

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)
RETRY = {"autoretry_for": REDIS_ERRORS, "retry_backoff": True, "retry_backoff_max": 30,
         "max_retries": 5}  # fmt: skip


@dataclass
class Runtime:
    """What one worker or executor process holds: settings, Redis, brackets, books."""

    settings: Settings
    client: redis.Redis
    tables: dict[str, BracketTable]
    app: Celery
    books: dict[int, PartitionBook] = field(default_factory=dict)
    brackets: batch.BracketArrays | None = None

    def book(self, partition: int) -> PartitionBook:
        """The partition's book, loaded from Redis on first use."""
        if partition not in self.books:
            if self.brackets is None:
                self.brackets = batch.BracketArrays.from_tables(self.tables, sorted(self.tables))
            book = PartitionBook(partition, self.brackets, self.tables)
            book.load(self.client)
            self.books[partition] = book
        return self.books[partition]

    def send_action(self, task: str, payload: dict[str, Any]) -> None:
        self.app.send_task(task, args=[payload], queue=ACTIONS_QUEUE)

    def enqueue_evaluation(self, partition: int) -> None:
        self.app.send_task(
            TASK_EVALUATE_PARTITION, args=[partition], queue=partition_queue(partition)
        )


def run_evaluation(runtime: Runtime, partition: int) -> EvaluationOutcome:
    """Clear the pending flag first (later notices queue one more), then evaluate."""
    runtime.client.delete(keys.partition_pending(partition))
    outcome = evaluate_partition(runtime.book(partition), runtime.client, runtime.settings,
                                 runtime.send_action)  # fmt: skip
    log.debug("partition %s: %s", partition, outcome)
    return outcome


def run_margin_call(runtime: Runtime, action: dict[str, Any]) -> str:
    """Margin call, then one webhook delivery task per configured URL."""
    outcome, event = actions.execute_margin_call(runtime.client, runtime.tables,
                                                 runtime.settings, action)  # fmt: skip
    if event is not None:
        for url in runtime.settings.webhook_urls:
            runtime.app.send_task(TASK_DELIVER_WEBHOOK, args=[url, json.dumps(event)],
                                  queue=WEBHOOKS_QUEUE)  # fmt: skip
    return outcome


def register_tasks(app: Celery, runtime: Runtime) -> None:
    """Define the tasks on ``app``, bound to ``runtime``."""

    @app.task(name=TASK_EVALUATE_PARTITION, **RETRY)
    def evaluate(partition: int) -> None:
        run_evaluation(runtime, partition)

    @app.task(name=TASK_MARGIN_CALL, **RETRY)
    def margin_call(action: dict[str, Any]) -> str:
        return run_margin_call(runtime, action)

    @app.task(name=TASK_MARGIN_CALL_RESOLVED, **RETRY)
    def margin_call_resolved(action: dict[str, Any]) -> str:
        return actions.execute_resolution(runtime.client, runtime.tables, runtime.settings, action)

    @app.task(name=TASK_LIQUIDATE, **RETRY)
    def liquidate(action: dict[str, Any]) -> str:
        return liquidation.execute_liquidation(runtime.client, runtime.tables, runtime.settings,
                                               action)  # fmt: skip

    @app.task(name=TASK_DELIVER_WEBHOOK, autoretry_for=(webhooks.WebhookDeliveryError,),
              retry_backoff=True, retry_backoff_max=60,
              max_retries=runtime.settings.webhook_max_attempts - 1)  # fmt: skip
    def deliver_webhook(url: str, body: str) -> int:
        return webhooks.deliver(url, body.encode(), runtime.settings.webhook_secret)

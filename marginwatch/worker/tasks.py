"""The partition worker's Celery task: a few lines handing this process's resources to
``evaluate_partition``, sending the actions it found, and observing it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from celery import Celery
from prometheus_client import CollectorRegistry

from marginwatch.base import crash, keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.metrics import WorkerMetrics
from marginwatch.engine import batch
from marginwatch.runtime.celery_app import (
    RETRY_ON_REDIS_ERRORS,
    TASK_EVALUATE_PARTITION,
    QueueKind,
    queue_lengths,
    send_actions,
    send_evaluation,
)
from marginwatch.runtime.observe import counting_redis_errors
from marginwatch.runtime.process import Runtime
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.due import due_backlog, overdue
from marginwatch.state.identity import RedisIdentity, redis_identity
from marginwatch.worker import adl_sketch, instrumentation, stress_metrics
from marginwatch.worker.background import PartitionJobs
from marginwatch.worker.evaluation import (
    EvaluationOutcome,
    evaluate_partition,
    finish_evaluation,
    reconcile_episodes,
    reconfirm_settled_liquidations,
    record_due,
)
from marginwatch.worker.partition import PartitionBook

log = logging.getLogger("marginwatch.worker")


def _unserved_metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


@dataclass
class WorkerRuntime(Runtime):
    """A partition worker's process: its books and metrics (on a private registry unless the
    daemon serves them)."""

    books: dict[int, PartitionBook] = field(default_factory=dict)
    brackets: batch.BracketArrays | None = None
    metrics: WorkerMetrics = field(default_factory=_unserved_metrics)
    liquidation_map_due: instrumentation.Throttle = field(
        default_factory=lambda: instrumentation.Throttle(
            instrumentation.LIQUIDATION_MAP_INTERVAL_SECONDS
        )
    )
    book_gauges_due: instrumentation.Throttle = field(default_factory=instrumentation.Throttle)
    identity_due: instrumentation.Throttle = field(default_factory=instrumentation.Throttle)
    identity: RedisIdentity | None = None  # of the Redis the books were loaded from
    stress: stress_metrics.StressMonitor | None = None  # the configured stress scenarios
    adl_sketches: PartitionJobs = field(default_factory=adl_sketch.sketch_jobs)

    def book(self, partition: int) -> PartitionBook:
        """The partition's book, loaded from Redis on first use."""
        if partition not in self.books:
            if self.brackets is None:
                self.brackets = batch.BracketArrays.from_tables(self.tables, sorted(self.tables))
            bad = BadRecords(self.count_bad_record)
            book = PartitionBook(partition, self.brackets, self.tables, bad=bad)
            book.load(self.client)
            self.books[partition] = book
        return self.books[partition]

    def count_bad_record(self, kind: str) -> None:
        """Counted on the metrics served now (the daemon may replace them)."""
        self.metrics.count_bad_record(kind)

    def check_redis(self) -> str | None:
        """At most once a second: forget every book if Redis restarted or lost its data since
        they were loaded (each is read again on its next use); why, if so."""
        if not self.identity_due.due(0):
            return None
        now = redis_identity(self.client)
        reason = None if self.identity is None else now.change_from(self.identity)
        self.identity = now
        if reason is not None:
            log.warning("%s: reading partitions %s again", reason, sorted(self.books))
            self.books.clear()
            self.metrics.book_reloads.labels(reason).inc()
        return reason

    def enqueue_evaluation(self, partition: int) -> None:
        send_evaluation(self.app, partition)


def run_evaluation(runtime: WorkerRuntime, partition: int) -> EvaluationOutcome:
    """Clear the pending flag first (later notices queue one more), evaluate, send, observe."""
    metrics, settings = runtime.metrics, runtime.settings
    with counting_redis_errors(metrics.redis_errors):
        runtime.client.delete(keys.partition_pending(partition))
        metrics.set_pending([partition], pending=False)
        runtime.check_redis()
        book = runtime.book(partition)
        outcome = evaluate_partition(book, runtime.client, settings)
        record_due(runtime.client, book, outcome)
        send_actions(runtime.app, partition, outcome.actions)
        if outcome.actions:
            crash.at("worker:after-send")
        finish_evaluation(runtime.client, book, outcome)
    log.debug("partition %s: %s", partition, outcome)
    instrumentation.observe_evaluation(metrics, book, outcome, settings.stale_after_seconds)
    stress_metrics.after_evaluation(runtime.stress, runtime.client, book, outcome)
    adl_sketch.publish_if_due(runtime.adl_sketches, runtime.client, book, outcome)
    if runtime.book_gauges_due.due(partition):
        once_a_second(runtime, book, outcome)
    if runtime.liquidation_map_due.due(partition):
        instrumentation.refresh_liquidation_map(metrics, book, outcome.marks, settings.venue)
    return outcome


def once_a_second(runtime: WorkerRuntime, book: PartitionBook, outcome: EvaluationOutcome) -> None:
    """What an evaluation of the partition does at most once a second: the book's gauges, the
    due liquidations and the queues' lengths measured, liquidations lost sent again,
    episode flags taken from Redis."""
    metrics, partition = runtime.metrics, book.partition
    instrumentation.observe_book_gauges(
        metrics, book, outcome, runtime.settings.stale_after_seconds
    )
    with counting_redis_errors(metrics.redis_errors):
        due = due_backlog(runtime.client, partition)
        queued = queue_lengths(runtime.app, partition)
        if not queued[QueueKind.LIQUIDATIONS]:
            resend_overdue(runtime, book, outcome.started_at)
        reconfirm_settled_liquidations(runtime.client, book)
        if not queued[QueueKind.MARGIN_CALLS]:
            reconcile_episodes(runtime.client, book)  # else margin calls may be queued
    instrumentation.observe_due(metrics, partition, due, outcome.started_at)
    instrumentation.observe_queues(metrics, partition, queued)


def resend_overdue(runtime: WorkerRuntime, book: PartitionBook, now: float) -> int:
    """Send again the liquidations due for longer than the setting (with nothing waiting in
    the partition's liquidation queue, a message lost with an executor); how many."""
    sent_before_ms = int((now - runtime.settings.liquidation_resend_after_seconds) * 1000)
    pools = overdue(runtime.client, book.partition, sent_before_ms)
    versions = [(account_id, pool, book.version_of(account_id)) for account_id, pool in pools]
    resent = [Action(ActionKind.LIQUIDATION, book.partition, account_id, pool, version)
              for account_id, pool, version in versions if version is not None]  # fmt: skip
    if resent:
        log.warning("partition %s: %d due liquidations sent again", book.partition, len(resent))
        send_actions(runtime.app, book.partition, resent)
        runtime.metrics.actions_sent.labels(ActionKind.LIQUIDATION.value).inc(len(resent))
    return len(resent)


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Define the evaluation task on ``app``, bound to ``runtime``."""

    @app.task(name=TASK_EVALUATE_PARTITION, **RETRY_ON_REDIS_ERRORS)
    def evaluate(partition: int) -> None:
        run_evaluation(runtime, partition)

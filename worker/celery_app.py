"""The Celery application, configured for money, and the names of every task and queue."""

from __future__ import annotations

from celery import Celery

from marginwatch.settings import Settings

TASK_EVALUATE_PARTITION = "marginwatch.evaluate_partition"
TASK_MARGIN_CALL = "marginwatch.margin_call"
# Every margin call one evaluation found, in one message (a list of margin-call actions).
TASK_MARGIN_CALLS = "marginwatch.margin_calls"
TASK_MARGIN_CALL_RESOLVED = "marginwatch.margin_call_resolved"
TASK_LIQUIDATE = "marginwatch.liquidate"
TASK_DELIVER_WEBHOOK = "marginwatch.deliver_webhook"

ACTIONS_QUEUE = "marginwatch.actions"
# Margin calls and their resolutions: cheap, latency-bound; the executor drains this queue
# before it takes a liquidation (see ``consume_in_listed_order``).
MARGIN_CALLS_QUEUE = "marginwatch.margin-calls"
WEBHOOKS_QUEUE = "marginwatch.webhooks"
_PARTITION_QUEUE = "marginwatch.partition.{partition}"

# Longer than any task may run (the hard time limit), so an unacknowledged task is redelivered
# only after its worker is really gone.
VISIBILITY_MARGIN_SECONDS = 300


def partition_queue(partition: int) -> str:
    return _PARTITION_QUEUE.format(partition=partition)


def make_celery(settings: Settings, broker_url: str) -> Celery:
    """JSON only; late acks with requeue on worker loss; prefetch 1; time limits."""
    app = Celery("marginwatch", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_seconds,
        task_soft_time_limit=max(1, settings.task_time_limit_seconds - 5),
        broker_transport_options={
            "visibility_timeout": settings.task_time_limit_seconds + VISIBILITY_MARGIN_SECONDS
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=ACTIONS_QUEUE,
        task_routes={
            TASK_MARGIN_CALL: {"queue": MARGIN_CALLS_QUEUE},
            TASK_MARGIN_CALLS: {"queue": MARGIN_CALLS_QUEUE},
            TASK_MARGIN_CALL_RESOLVED: {"queue": MARGIN_CALLS_QUEUE},
            TASK_LIQUIDATE: {"queue": ACTIONS_QUEUE},
            TASK_DELIVER_WEBHOOK: {"queue": WEBHOOKS_QUEUE},
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def queue_of(task: str) -> str:
    """The queue an action task is sent to."""
    return (
        MARGIN_CALLS_QUEUE
        if task in (TASK_MARGIN_CALL, TASK_MARGIN_CALLS, TASK_MARGIN_CALL_RESOLVED)
        else ACTIONS_QUEUE
    )


def consume_in_listed_order(app: Celery) -> None:
    """BRPOP the queues in the order given to ``-Q`` (kombu's ``priority`` strategy) instead of
    round robin: the executor takes every queued margin call before the next liquidation.
    Partition workers keep round robin (a fixed order would starve their later partitions)."""
    options = dict(app.conf.broker_transport_options)
    options["queue_order_strategy"] = "priority"
    app.conf.broker_transport_options = options

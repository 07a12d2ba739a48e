"""The Celery application, configured for money; the names of every task and queue; and the
one mapping between an action's kind and the task that carries it.

Each daemon builds its own app with ``make_celery`` and registers its tasks on it, bound to its
runtime. ``attachable_app`` is the app Celery's own tools load (``celery -A marginwatch``, see
``marginwatch.celery``): the same configuration, read from the ``MARGINWATCH_*`` settings the
first time the app's configuration is needed, never at import."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from celery import Celery

from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.settings import Settings, read_settings
from marginwatch.base.settings import broker_url as configured_broker_url
from marginwatch.runtime.observe import REDIS_ERRORS

APP_NAME = "marginwatch"
TASK_EVALUATE_PARTITION = "marginwatch.evaluate_partition"
# Every margin call one evaluation found, in one message (a list of margin-call actions).
TASK_MARGIN_CALLS = "marginwatch.margin_calls"
TASK_MARGIN_CALL_RESOLVED = "marginwatch.margin_call_resolved"
TASK_LIQUIDATE = "marginwatch.liquidate"
LIQUIDATION_BATCH = 1_000  # liquidations per message (one guarded write per account each)

# Every partition has its own queues: its evaluations, its margin calls and their resolutions
# (cheap, latency-bound: an executor drains them before it takes a liquidation, see
# ``consume_in_listed_order``) and its liquidations. Webhooks travel through each partition's
# outbox in Redis, not through Celery (see executor/outbox.py).
_PARTITION_QUEUE = "marginwatch.partition.{partition}"
_MARGIN_CALLS_QUEUE = "marginwatch.margin-calls.{partition}"
_ACTIONS_QUEUE = "marginwatch.actions.{partition}"
_DEFAULT_QUEUE = "marginwatch.default"  # nothing is sent there: every task names its queue


class QueueKind(StrEnum):
    """The kinds of a partition's queues (the ``queue_kind`` of their measured lengths)."""

    EVALUATIONS = "evaluations"
    MARGIN_CALLS = "margin_calls"
    LIQUIDATIONS = "liquidations"


_QUEUE_OF_KIND = {
    QueueKind.EVALUATIONS: _PARTITION_QUEUE,
    QueueKind.MARGIN_CALLS: _MARGIN_CALLS_QUEUE,
    QueueKind.LIQUIDATIONS: _ACTIONS_QUEUE,
}

TASK_OF_KIND = {
    ActionKind.MARGIN_CALL: TASK_MARGIN_CALLS,
    ActionKind.MARGIN_CALL_RESOLVED: TASK_MARGIN_CALL_RESOLVED,
    ActionKind.LIQUIDATION: TASK_LIQUIDATE,
}
KIND_OF_TASK = {task: kind for kind, task in TASK_OF_KIND.items()}

# Options of every task that touches Redis: a connection or timeout error retries it with
# backoff (at most 5 times). shared=False: a task belongs to its own app only (Celery would add
# it to every app created later in the process, bound to that app's runtime).
RETRY_ON_REDIS_ERRORS = {"autoretry_for": REDIS_ERRORS, "retry_backoff": True,
                         "retry_backoff_max": 30, "max_retries": 5, "shared": False}  # fmt: skip

# By default longer than any task may run (the hard time limit), so an unacknowledged task is
# redelivered only after its worker is really gone (``MARGINWATCH_VISIBILITY_TIMEOUT_SECONDS``
# overrides it).
VISIBILITY_MARGIN_SECONDS = 300


def partition_queue(partition: int) -> str:
    """The queue of the partition's evaluations."""
    return queue_of_kind(QueueKind.EVALUATIONS, partition)


def margin_calls_queue(partition: int) -> str:
    """The queue of the partition's margin calls and resolutions."""
    return queue_of_kind(QueueKind.MARGIN_CALLS, partition)


def actions_queue(partition: int) -> str:
    """The queue of the partition's liquidations."""
    return queue_of_kind(QueueKind.LIQUIDATIONS, partition)


def queue_of_kind(kind: QueueKind, partition: int) -> str:
    return _QUEUE_OF_KIND[kind].format(partition=partition)


def queue_of(kind: ActionKind, partition: int) -> str:
    """The queue an action of ``kind`` of ``partition`` travels on."""
    if kind is ActionKind.LIQUIDATION:
        return actions_queue(partition)
    return margin_calls_queue(partition)


def executor_queues(partitions: Sequence[int]) -> list[str]:
    """What an executor serving ``partitions`` consumes, in the order it drains them: every
    margin-call queue first, then the liquidation queues."""
    return [*map(margin_calls_queue, partitions), *map(actions_queue, partitions)]


def make_celery(settings: Settings, broker_url: str) -> Celery:
    """A daemon's app, configured by ``celery_options``."""
    app = Celery(APP_NAME, set_as_current=False)
    app.conf.update(celery_options(settings, broker_url))
    return app


def attachable_app() -> Celery:
    """The app of Celery's commands, Flower and celery-exporter: configured like the daemons'
    from the ``MARGINWATCH_*`` settings when its configuration is first read (a bad setting
    raises ``ConfigurationError`` then), so importing it reads nothing."""
    app = Celery(APP_NAME, set_as_current=False)
    app.add_defaults(_options_from_settings)
    return app


def _options_from_settings() -> dict[str, object]:
    settings = read_settings()
    return celery_options(settings, configured_broker_url(settings))


def celery_options(settings: Settings, broker_url: str) -> dict[str, object]:
    """JSON only; late acks with requeue on worker loss; prefetch 1; time limits; remote
    control on (``celery inspect``, Flower); task events when ``MARGINWATCH_TASK_EVENTS``; the
    broker's own options (``broker_options``)."""
    return {
        "broker_url": broker_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit_seconds,
        "task_soft_time_limit": max(1, settings.task_time_limit_seconds - 5),
        "broker_connection_retry_on_startup": True,
        "task_default_queue": _DEFAULT_QUEUE,
        "worker_hijack_root_logger": False,
        "worker_enable_remote_control": True,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        **broker_options(settings, broker_url),
    }


def is_amqp(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}


def broker_options(settings: Settings, broker_url: str) -> dict[str, object]:
    """RabbitMQ: every queue a quorum queue (replicated; a consumer's unacknowledged messages
    return to the queue the moment its connection drops) on a topic exchange, so delayed
    retries use Celery's native delayed delivery; publisher confirms. Redis: the transport
    options below."""
    if is_amqp(broker_url):
        return {
            "task_create_missing_queue_type": "quorum",
            "task_create_missing_queue_exchange_type": "topic",
            "broker_transport_options": {"confirm_publish": True},
        }
    return {"broker_transport_options": transport_options(settings)}


def queue_length(app: Celery, queue: str) -> int:
    """Messages waiting in ``queue`` on the broker (taken, unacknowledged ones not counted); 0
    when the queue does not exist yet."""
    with app.pool.acquire(block=True) as connection, connection.channel() as channel:
        # A channel of its own: AMQP closes the channel of a passive declare that fails.
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except connection.channel_errors:
            return 0


def queue_lengths(app: Celery, partition: int) -> dict[QueueKind, int]:
    """Messages waiting in each of the partition's queues (``queue_length``)."""
    return {kind: queue_length(app, queue_of_kind(kind, partition)) for kind in QueueKind}


def visibility_timeout_seconds(settings: Settings) -> int:
    """When an unacknowledged message is given to another consumer."""
    return settings.visibility_timeout_seconds or (
        settings.task_time_limit_seconds + VISIBILITY_MARGIN_SECONDS
    )


def transport_options(settings: Settings) -> dict[str, int]:
    """The Redis transport's options: the visibility timeout; a scan for messages past it every
    quarter of it (at most every 10 s; kombu's default scans every 100 s); and the scan's mutex
    expiring within the visibility timeout (kombu's 300 s would stall every restore for 5 min
    after a consumer died holding it)."""
    visibility = visibility_timeout_seconds(settings)
    return {
        "visibility_timeout": visibility,
        "unacked_restore_interval": min(10, max(1, visibility // 4)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": min(300, max(5, visibility)),
    }


def send_actions(app: Celery, partition: int, actions: Sequence[Action]) -> None:
    """Send one evaluation's actions (all of ``partition``) to the partition's queues: every
    margin call in one message first, then each resolution, then the liquidations in messages
    of up to ``LIQUIDATION_BATCH`` (the executor drains margin calls first, so a pool's margin
    call still precedes its liquidation)."""
    calls = [a.to_message() for a in actions if a.kind is ActionKind.MARGIN_CALL]
    if calls:
        app.send_task(TASK_MARGIN_CALLS, args=[calls], queue=margin_calls_queue(partition))
    for action in actions:
        if action.kind is ActionKind.MARGIN_CALL_RESOLVED:
            app.send_task(TASK_MARGIN_CALL_RESOLVED, args=[action.to_message()],
                          queue=queue_of(action.kind, partition))  # fmt: skip
    liquidations = [a.to_message() for a in actions if a.kind is ActionKind.LIQUIDATION]
    for start in range(0, len(liquidations), LIQUIDATION_BATCH):
        app.send_task(TASK_LIQUIDATE, args=[liquidations[start : start + LIQUIDATION_BATCH]],
                      queue=queue_of(ActionKind.LIQUIDATION, partition))  # fmt: skip


def send_evaluation(app: Celery, partition: int) -> None:
    """Queue one evaluation of ``partition`` on its own queue."""
    app.send_task(TASK_EVALUATE_PARTITION, args=[partition], queue=partition_queue(partition))


def consume_in_listed_order(app: Celery) -> None:
    """BRPOP the queues in the order given to ``-Q`` (kombu's ``priority`` strategy) instead of
    round robin: the executor takes every queued margin call before the next liquidation.
    Partition workers keep round robin (a fixed order would starve their later partitions).
    RabbitMQ delivers from every consumed queue, one unacknowledged message each (prefetch 1):
    a margin call waits behind at most one liquidation."""
    if is_amqp(str(app.conf.broker_url)):
        return
    options = dict(app.conf.broker_transport_options)
    options["queue_order_strategy"] = "priority"
    app.conf.broker_transport_options = options

"""The "Pipeline health" dashboard: services up, the price feed, partition evaluations and the
actions that follow."""

from __future__ import annotations

from dashboards.builder import (
    DOWN_IS_RED,
    PARTITION,
    SERVICES_UP,
    UP_MAPPINGS,
    WORKER_UP,
    Grid,
    Json,
    color_by_name,
    dashboard,
    now,
    q,
    quantiles,
    rate_by,
    right_axis,
    series,
    thresholds,
    variable,
)
from marginwatch.base import metrics


def pipeline_health() -> Json:
    """Services up, the price feed, partition evaluations and the actions that follow."""
    grid = Grid()
    grid.section("Services")
    grid.stat(
        "Workers up",
        "Partition worker processes Prometheus scrapes: up, and down.",
        (6, 5),
        "short",
        [now(f"sum({WORKER_UP})", "up"), now(f"count({WORKER_UP} == 0) or vector(0)", "down")],
        thresholds((None, "green")),
        overrides=[DOWN_IS_RED],
    )
    grid.stat(
        "Producer and executor",
        "Whether Prometheus can scrape the producer and the executor.",
        (6, 5),
        "none",
        [now(SERVICES_UP, "{{job}} {{instance}}")],
        thresholds((None, "red"), (1, "green")),
        mappings=UP_MAPPINGS,
    )
    grid.stat(
        "Last tick age",
        "Seconds since the event time of the newest tick the producer accepted.",
        (6, 5),
        "s",
        [now(f"time() - max({series(metrics.PRODUCER_LAST_TICK_TIMESTAMP)})", "age")],
        thresholds((None, "green"), (10, "orange"), (30, "red")),
    )
    grid.stat(
        "Stale symbols",
        (
            "The most symbols any partition holds a stale mark for (older than "
            "MARGINWATCH_STALE_AFTER_SECONDS)."
        ),
        (6, 5),
        "short",
        [now(f"max({series(metrics.STALE_SYMBOLS)}) or vector(0)", "stale")],
        thresholds((None, "green"), (1, "red")),
    )

    grid.section("Price feed")
    grid.timeseries(
        "Ticks accepted and rejected per second",
        "Ticks the producer published, and the ticks it refused, by reason.",
        (12, 8),
        "ops",
        [
            q(rate_by(metrics.TICKS_ACCEPTED, ""), "accepted"),
            q(rate_by(metrics.TICKS_REJECTED, "reason"), "rejected {{reason}}"),
        ],
    )
    grid.timeseries(
        "Tick age at evaluation",
        "Age of the newest tick when a partition evaluation read it: p50 and p99 per partition.",
        (12, 8),
        "s",
        quantiles(metrics.TICK_AGE, "partition", PARTITION, "partition {{partition}}"),
    )
    grid.timeseries(
        "Stale symbols by partition",
        "Symbols whose mark is stale, as each partition sees them.",
        (12, 7),
        "short",
        [
            q(
                f"max by (partition) ({series(metrics.STALE_SYMBOLS, PARTITION)})",
                "partition {{partition}}",
            )
        ],
    )
    grid.timeseries(
        "Redis errors per second",
        "Redis connection and timeout errors, by component.",
        (12, 7),
        "ops",
        [q(rate_by(metrics.REDIS_ERRORS, "component"), "{{component}}")],
    )
    grid.timeseries(
        "Bad records skipped per minute",
        "Records read from Redis that could not be used (a malformed tick, a corrupt account, a "
        "malformed action message): skipped, the others read on. Any is a bug or a writer to fix.",
        (12, 7),
        "short",
        [q(rate_by(metrics.BAD_RECORDS, "component, kind", scale="60"), "{{component}} {{kind}}")],
    )
    grid.timeseries(
        "Book reloads per minute",
        "Workers reading all their books again because Redis restarted or came back without its "
        "data. Expected after a Redis restart; otherwise look at Redis' log.",
        (12, 7),
        "short",
        [q(rate_by(metrics.BOOK_RELOADS, "reason", scale="60"), "{{reason}}")],
    )

    grid.section("Evaluation")
    duration = metrics.EVALUATION_DURATION
    seconds, count = (rate_by(f"{duration}_{part}", "", PARTITION) for part in ("sum", "count"))
    mean = f"{seconds} / {count}"
    grid.timeseries(
        "Evaluation latency by partition",
        (
            "Duration of one partition evaluation (refresh, batch screening, exact confirmation, "
            "actions sent): p50 and p99 per partition, and the mean."
        ),
        (12, 8),
        "s",
        [*quantiles(duration, "partition", PARTITION, "partition {{partition}}"), q(mean, "mean")],
    )
    grid.timeseries(
        "Evaluations per second by partition",
        "Finished partition evaluations per second.",
        (12, 8),
        "ops",
        [
            q(
                rate_by(metrics.EVALUATIONS, "partition", PARTITION),
                "partition {{partition}}",
            )
        ],
    )
    grid.timeseries(
        "Positions evaluated per second",
        "Positions screened per second, per partition.",
        (8, 8),
        "ops",
        [
            q(
                rate_by(metrics.POSITIONS_EVALUATED, "partition", PARTITION),
                "partition {{partition}}",
            )
        ],
    )
    grid.timeseries(
        "Pending evaluations by partition",
        (
            "Evaluations queued and not yet started; the dispatcher coalesces ticks, so this stays "
            "at 0 or 1."
        ),
        (8, 8),
        "short",
        [
            q(
                f"max by (partition) ({series(metrics.PARTITION_PENDING, PARTITION)})",
                "partition {{partition}}",
            )
        ],
    )
    sequence = metrics.PARTITION_LAST_SEQUENCE
    grid.timeseries(
        "Partition lag behind the newest evaluated tick",
        (
            "Ticks between the newest tick sequence any partition evaluated and the one each "
            "partition last evaluated."
        ),
        (8, 8),
        "short",
        [
            q(
                f"scalar(max({series(sequence)})) - "
                f"max by (partition) ({series(sequence, PARTITION)})",
                "partition {{partition}}",
            )
        ],
    )

    grid.section("Actions")
    grid.timeseries(
        "Tick-to-action latency",
        (
            "From the event time of the tick that triggered an action to the executor carrying it "
            "out: p50 and p99 per action."
        ),
        (12, 8),
        "s",
        quantiles(metrics.TICK_TO_ACTION_LATENCY, "action", "", "{{action}}"),
    )
    grid.timeseries(
        "Queued messages by queue",
        (
            "Messages waiting in each partition's Celery queues (evaluations, margin calls, "
            "liquidations), measured by its worker at most once a second. Liquidations piling up: "
            "the executor does not keep up."
        ),
        (12, 8),
        "short",
        [
            q(
                f"max by (queue_kind, partition) ({series(metrics.QUEUE_MESSAGES, PARTITION)})",
                "{{queue_kind}} {{partition}}",
            )
        ],
    )
    grid.timeseries(
        "Oldest due liquidation",
        (
            "Per partition, how long the oldest liquidation found due (confirmed exactly) has "
            "waited for an executor; 0 when none waits."
        ),
        (12, 7),
        "s",
        [
            q(
                f"max by (partition) ({series(metrics.OLDEST_DUE_LIQUIDATION, PARTITION)})",
                "partition {{partition}}",
            )
        ],
    )
    grid.timeseries(
        "Oldest pending webhook delivery",
        (
            "Per partition, how long the oldest margin-call webhook not yet delivered (unread, "
            "being attempted, or waiting for a retry) has waited in the outbox; 0 when none."
        ),
        (12, 7),
        "s",
        [
            q(
                f"max by (partition) ({series(metrics.OLDEST_WEBHOOK_DELIVERY, PARTITION)})",
                "partition {{partition}}",
            )
        ],
    )
    due_backlog(grid)
    grid.timeseries(
        "Actions sent per second",
        "Actions the workers sent to the executor, by action.",
        (12, 8),
        "ops",
        [q(rate_by(metrics.ACTIONS_SENT, "action"), "{{action}}")],
    )
    grid.timeseries(
        "Action failures and retries per second",
        "Executor actions that failed for good, and retries, by action.",
        (8, 8),
        "ops",
        [
            q(rate_by(metrics.ACTION_FAILURES, "action"), "failed {{action}}"),
            q(rate_by(metrics.ACTION_RETRIES, "action"), "retried {{action}}"),
        ],
    )
    grid.timeseries(
        "Webhook deliveries per second",
        "Margin-call webhook deliveries, by result.",
        (8, 8),
        "ops",
        [q(rate_by(metrics.WEBHOOK_DELIVERIES, "result"), "{{result}}")],
        overrides=color_by_name({"delivered": "green", "retried": "yellow", "failed": "red"}),
    )
    grid.timeseries(
        "Account events per second",
        "Account events the executor applied, by outcome.",
        (8, 8),
        "ops",
        [q(rate_by(metrics.ACCOUNT_EVENTS, "outcome"), "{{outcome}}")],
    )
    return dashboard(
        "marginwatch-pipeline",
        "marginwatch / Pipeline health",
        "Services up, the price feed, partition evaluations and the actions that follow.",
        grid,
        [variable("partition", metrics.EVALUATIONS)],
    )


# Every executor's capacity, and the due liquidations (a worker pair on one range: max).
CAPACITY = f"sum({series(metrics.LIQUIDATION_CAPACITY)})"
DUE = f"sum(max by (partition) ({series(metrics.LIQUIDATIONS_DUE)}))"
DUE_LEGEND = "due liquidations"


def due_backlog(grid: Grid) -> None:
    """The executors' capacity against the due liquidations, and the time to drain them."""
    grid.timeseries(
        "Liquidation capacity and due backlog",
        (
            "Liquidations per second all executors could execute at the cost they measured over "
            "their last liquidation tasks, against the liquidations due (sent, not yet executed "
            "nor skipped; right axis)."
        ),
        (12, 8),
        "ops",
        [q(CAPACITY, "capacity"), q(DUE, DUE_LEGEND)],
        overrides=[right_axis(DUE_LEGEND, "short")],
    )
    grid.timeseries(
        "Time to drain the due liquidations",
        (
            "The due liquidations over the executors' capacity: how long they would take to "
            "execute the backlog if no more came. Rising during a cascade: they do not keep up."
        ),
        (12, 8),
        "s",
        [q(f"{DUE} / {CAPACITY}", "time to drain")],
    )

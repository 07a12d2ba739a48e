"""Feeding the executor's metrics (``marginwatch.base.metrics``) from what the actions return.

The task wrappers in ``marginwatch.executor.tasks`` hand outcomes here. Celery's ``task_retry``
and ``task_failure`` signals count retries and final failures of the action tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import Celery
from celery.signals import task_failure, task_retry

from marginwatch.base.actions import Action
from marginwatch.base.metrics import ExecutorMetrics
from marginwatch.base.pools import margin_mode_of
from marginwatch.executor.liquidation import LiquidationOutcome
from marginwatch.runtime.celery_app import KIND_OF_TASK
from marginwatch.runtime.observe import age_seconds
from marginwatch.state import outbox
from marginwatch.state.applier import AppliedCounts
from marginwatch.state.fund import read_ledgers


def observe_latency(metrics: ExecutorMetrics, action: Action) -> None:
    """Tick-to-action latency of an action whose event was just written."""
    if action.tick_event_time_ms > 0:
        latency = age_seconds(time.time(), action.tick_event_time_ms)
        metrics.tick_to_action_latency.labels(action.kind.value).observe(latency)


def observe_margin_call(metrics: ExecutorMetrics, action: Action, outcome: str) -> None:
    if outcome == "sent":
        metrics.margin_calls.labels(margin_mode_of(action.pool).value).inc()
        observe_latency(metrics, action)


def observe_resolution(metrics: ExecutorMetrics, action: Action, outcome: str) -> None:
    if outcome == "sent":
        metrics.margin_call_resolutions.labels(margin_mode_of(action.pool).value).inc()
        observe_latency(metrics, action)


def observe_liquidation(
    metrics: ExecutorMetrics, action: Action, outcome: LiquidationOutcome
) -> None:
    """Liquidations and their notional, skips by reason."""
    if outcome.skip_reason is not None:
        metrics.liquidations_skipped.labels(outcome.skip_reason).inc()
    if outcome.result != "liquidated":
        return
    metrics.liquidations.labels(margin_mode_of(action.pool).value).inc()
    for closed in outcome.closed:
        notional = abs(closed.position.quantity) * closed.mark_price
        metrics.liquidated_notional.labels(closed.position.symbol).inc(float(notional))
    observe_latency(metrics, action)


def observe_liquidations(
    metrics: ExecutorMetrics,
    batch: Sequence[Action],
    outcomes: Sequence[LiquidationOutcome],
    seconds: float,
) -> None:
    """Each liquidation of a batch, and what the batch cost: its liquidations (liquidated,
    skipped or duplicate: each takes its pool off the due backlog) in ``seconds``."""
    for action, outcome in zip(batch, outcomes, strict=True):
        observe_liquidation(metrics, action, outcome)
    if batch:
        metrics.liquidation_capacity.observe(len(batch), seconds)


def observe_applied(metrics: ExecutorMetrics, counts: AppliedCounts) -> None:
    """The applier's ``on_step`` hook: account events by outcome."""
    metrics.account_events.labels("accepted").inc(counts.accepted)
    metrics.account_events.labels("rejected").inc(counts.rejected)
    metrics.account_events.labels("duplicate").inc(counts.duplicates)


def insurance_fund_reader(
    client: redis.Redis, partitions: Sequence[int]
) -> Callable[[], dict[int, float] | None]:
    """Reads the served partitions' ledgers for a scrape (0 when unset; ``None`` when Redis
    fails)."""

    def read() -> dict[int, float] | None:
        try:
            ledgers = read_ledgers(client, partitions)
        except redis.RedisError:
            return None
        return {partition: float(balance) for partition, balance in ledgers.items()}

    return read


def oldest_webhook_delivery_reader(
    client: redis.Redis, partitions: Sequence[int]
) -> Callable[[], dict[int, float] | None]:
    """Reads, for a scrape, the age of each served partition's oldest webhook delivery still to
    make (0 when none; ``None`` when Redis fails)."""

    def read() -> dict[int, float] | None:
        try:
            oldest = {p: outbox.oldest_pending_ms(client, p) for p in partitions}
        except redis.RedisError:
            return None
        now = time.time()
        return {p: 0.0 if ms is None else age_seconds(now, ms) for p, ms in oldest.items()}

    return read


def connect_task_signals(app: Celery, metrics: Callable[[], ExecutorMetrics]) -> None:
    """Count retries and final failures of ``app``'s action tasks.

    ``metrics`` is called at each signal, so the daemon may set its metrics after this.
    """

    def handler(kind: str) -> Callable[..., None]:
        def count(sender: Any = None, **_: Any) -> None:
            if getattr(sender, "app", None) is app:
                count_task_signal(metrics(), sender.name, kind)

        return count

    task_retry.connect(handler("retry"), weak=False)
    task_failure.connect(handler("failure"), weak=False)


def count_task_signal(metrics: ExecutorMetrics, task: str, kind: str) -> None:
    """A ``retry`` or ``failure`` of an action ``task``."""
    if task in KIND_OF_TASK:
        counter = metrics.action_retries if kind == "retry" else metrics.action_failures
        counter.labels(KIND_OF_TASK[task].value).inc()

"""The executor's Celery tasks: each a few lines parsing its action message and handing this
process's resources to a plain function, then observing the outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from prometheus_client import CollectorRegistry

from marginwatch.base import crash, keys
from marginwatch.base.actions import Action, ActionMessageError
from marginwatch.base.metrics import ExecutorMetrics
from marginwatch.base.partitions import partition_of
from marginwatch.executor import instrumentation, liquidation, margin_calls
from marginwatch.executor.liquidation import LiquidationOutcome
from marginwatch.runtime.celery_app import (
    RETRY_ON_REDIS_ERRORS,
    TASK_LIQUIDATE,
    TASK_MARGIN_CALL_RESOLVED,
    TASK_MARGIN_CALLS,
)
from marginwatch.runtime.observe import counting_redis_errors
from marginwatch.runtime.process import Runtime
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.connection import wait_for_replicas
from marginwatch.state.due import due_actions

DUE_DRAIN_LIMIT = 5_000  # due liquidations of a partition taken with one message


def _unserved_metrics() -> ExecutorMetrics:
    return ExecutorMetrics(CollectorRegistry())


@dataclass
class ExecutorRuntime(Runtime):
    """An executor's process: its metrics (on a private registry unless the daemon serves
    them)."""

    metrics: ExecutorMetrics = field(default_factory=_unserved_metrics)
    bad: BadRecords = field(init=False)

    def __post_init__(self) -> None:
        self.bad = BadRecords(self.count_bad_record)

    def count_bad_record(self, kind: str) -> None:
        """Counted on the metrics served now (the daemon may replace them)."""
        self.metrics.count_bad_record(kind)


def parse_action(runtime: ExecutorRuntime, message: Any) -> Action | None:
    """The action of a message, whose partition must be its account's; ``None`` (reported as
    a bad record, the others go on) when it is not one."""
    try:
        action = Action.from_message(message)
        home = partition_of(action.account_id, runtime.settings.partitions)
        if action.partition != home:
            raise ActionMessageError(
                f"partition: {action.account_id} belongs to partition {home}, "
                f"not {action.partition}"
            )
    except ActionMessageError as error:
        runtime.bad.report("action", repr(message)[:120], str(error))
        return None
    return action


def parse_actions(runtime: ExecutorRuntime, messages: Any) -> list[Action]:
    """The actions of a batch message; bad ones are reported and left out."""
    if not isinstance(messages, list):
        runtime.bad.report("action", repr(messages)[:120], "message: expected a list of actions")
        return []
    parsed = [parse_action(runtime, message) for message in messages]
    return [action for action in parsed if action is not None]


def run_margin_calls(runtime: ExecutorRuntime, batch: list[Action]) -> list[str]:
    """Margin calls of one evaluation (their webhooks go to the outbox with them)."""
    with counting_redis_errors(runtime.metrics.redis_errors):
        results = margin_calls.execute_margin_calls(
            runtime.client, runtime.tables, runtime.settings, batch, runtime.bad
        )
    crash.at("executor:after-margin-calls")
    for action, outcome in zip(batch, results, strict=True):
        instrumentation.observe_margin_call(runtime.metrics, action, outcome)
    return results


def run_resolution(runtime: ExecutorRuntime, action: Action) -> str:
    """End a margin-call episode if the exact ratio says so."""
    with counting_redis_errors(runtime.metrics.redis_errors):
        outcome = margin_calls.execute_resolution(
            runtime.client, runtime.tables, runtime.settings, action, runtime.bad
        )
    instrumentation.observe_resolution(runtime.metrics, action, outcome)
    return outcome


def run_liquidations(runtime: ExecutorRuntime, batch: list[Action]) -> list[str]:
    """Liquidate, as one batch, each pool the exact path still says so: the message's
    actions and every other liquidation due in their partitions (``state.due``); the batch's
    cost is measured. What happened to the message's own actions."""
    started, own = time.perf_counter(), len(batch)
    batch = with_due(runtime, batch)
    outcomes = liquidate_replicated(runtime, batch)
    seconds = time.perf_counter() - started
    crash.at("executor:after-liquidation")
    instrumentation.observe_liquidations(runtime.metrics, batch, outcomes, seconds)
    return [outcome.result for outcome in outcomes[:own]]


def with_due(runtime: ExecutorRuntime, batch: list[Action]) -> list[Action]:
    """The batch, then the other liquidations due in its partitions (up to ``DUE_DRAIN_LIMIT``
    each; bad ones reported and left out)."""
    seen = {liquidation.liquidation_key(action) for action in batch}
    extra = []
    with counting_redis_errors(runtime.metrics.redis_errors):
        for partition in sorted({action.partition for action in batch}):
            messages = due_actions(runtime.client, partition, DUE_DRAIN_LIMIT)
            for action in parse_actions(runtime, messages):
                if liquidation.liquidation_key(action) not in seen:
                    seen.add(liquidation.liquidation_key(action))
                    extra.append(action)
    return [*batch, *extra]


def liquidate_replicated(runtime: ExecutorRuntime, batch: list[Action]) -> list[LiquidationOutcome]:
    """The batch's liquidations, waited on until ``wait_replicas`` replicas of every partition
    written hold them."""
    settings = runtime.settings
    with counting_redis_errors(runtime.metrics.redis_errors):
        outcomes = liquidation.liquidate_batch(runtime.client, runtime.tables, settings, batch,
                                               runtime.bad)  # fmt: skip
        written = {
            a.partition for a, o in zip(batch, outcomes, strict=True) if o.result != "skipped"
        }
        for partition in sorted(written):  # liquidated now, or before (a redelivery)
            wait_for_replicas(runtime.client, keys.partition_replicated(partition),
                              settings.wait_replicas, settings.wait_timeout_ms)  # fmt: skip
    return outcomes


def register_tasks(app: Celery, runtime: ExecutorRuntime) -> None:
    """Define the action tasks on ``app``, bound to ``runtime``; count their retries and
    failures."""
    instrumentation.connect_task_signals(app, lambda: runtime.metrics)

    @app.task(name=TASK_MARGIN_CALLS, **RETRY_ON_REDIS_ERRORS)
    def margin_calls_found(messages: Any) -> list[str]:
        return run_margin_calls(runtime, parse_actions(runtime, messages))

    @app.task(name=TASK_MARGIN_CALL_RESOLVED, **RETRY_ON_REDIS_ERRORS)
    def margin_call_resolved(message: Any) -> str:
        action = parse_action(runtime, message)
        return "bad_message" if action is None else run_resolution(runtime, action)

    @app.task(name=TASK_LIQUIDATE, **RETRY_ON_REDIS_ERRORS)
    def liquidate(messages: Any) -> list[str]:
        """A batch of liquidations (a lone message, as an older worker sends it, is one)."""
        batch = messages if isinstance(messages, list) else [messages]
        return run_liquidations(runtime, parse_actions(runtime, batch))

"""Prometheus metrics: the collectors' arithmetic, instrumentation against real Redis, serving."""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from marginwatch.base import keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.metrics import (
    CAPACITY_WINDOW_TASKS,
    MARGIN_RATIO_LE,
    STATUSES,
    ExecutorMetrics,
    ProducerMetrics,
    WorkerMetrics,
    liquidation_band_notional,
    metrics_url,
    pool_counts,
    serve_metrics,
)
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.cli.demo import children, metrics_lines, metrics_ports
from marginwatch.cli.embedded_redis import RedisServer, free_port
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import STATUS_ORDER, Account, MarginMode, Position
from marginwatch.executor import tasks as executor_tasks
from marginwatch.executor.instrumentation import (
    count_task_signal,
    insurance_fund_reader,
    observe_applied,
    oldest_webhook_delivery_reader,
)
from marginwatch.executor.tasks import (
    ExecutorRuntime,
    parse_actions,
    run_liquidations,
    run_margin_calls,
    run_resolution,
)
from marginwatch.producer.publisher import Publisher
from marginwatch.producer.replay import replay_source
from marginwatch.producer.run import ProducerStats, run_producer
from marginwatch.producer.validation import TickValidator
from marginwatch.runtime.celery_app import (
    TASK_LIQUIDATE,
    TASK_MARGIN_CALLS,
    actions_queue,
    make_celery,
    send_actions,
    send_evaluation,
)
from marginwatch.runtime.observe import REDIS_ERRORS
from marginwatch.state import outbox
from marginwatch.state.accounts import store_accounts
from marginwatch.state.applier import run_applier
from marginwatch.worker import tasks as worker_tasks
from marginwatch.worker.tasks import WorkerRuntime, run_evaluation
from tests.polling import wait_for

D = Decimal
CROSS, ISOLATED = MarginMode.CROSS, MarginMode.ISOLATED
TABLES = dict(default_tables())
NAN = math.nan


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """One sample's value, as Prometheus would scrape it."""
    return registry.get_sample_value(name, labels)


# The collectors' arithmetic.


def test_statuses_follow_the_batch_status_codes() -> None:
    """The status label of code ``i`` is the engine's ``STATUS_ORDER[i]``."""
    assert tuple(status.value for status in STATUS_ORDER) == STATUSES


def test_cross_margin_ratio_gauge_histogram_buckets() -> None:
    """Eight ratios: ``le`` inclusive, cumulative; nan (balance <= 0) in +Inf, not summed."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.cross_margin_ratio.update(3, np.array([0.05, 0.1, 0.15, 0.7, 0.95, 1.0, 1.3, NAN]))
    expected = {"0.1": 2, "0.2": 3, "0.3": 3, "0.4": 3, "0.5": 3, "0.6": 3, "0.7": 4, "0.8": 4,
                "0.9": 4, "1.0": 6, "+Inf": 8}  # fmt: skip
    assert list(expected) == list(MARGIN_RATIO_LE)
    for le, count in expected.items():
        assert sample(registry, "marginwatch_cross_margin_ratio_bucket", partition="3", le=le) == (
            count
        )
    assert sample(registry, "marginwatch_cross_margin_ratio_gcount", partition="3") == 8
    gsum = sample(registry, "marginwatch_cross_margin_ratio_gsum", partition="3")
    assert gsum == pytest.approx(0.05 + 0.1 + 0.15 + 0.7 + 0.95 + 1.0 + 1.3)


def test_a_partition_distribution_is_replaced_not_accumulated() -> None:
    """The gauge histogram is the current distribution: a new evaluation replaces the last."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.cross_margin_ratio.update(0, np.array([0.5, 0.5, 0.5]))
    metrics.cross_margin_ratio.update(0, np.array([0.85]))
    assert sample(registry, "marginwatch_cross_margin_ratio_gcount", partition="0") == 1
    assert sample(registry, "marginwatch_cross_margin_ratio_bucket", partition="0", le="0.8") == 0


def test_pools_by_status_and_margin_mode() -> None:
    """Six pools counted with one bincount; every (status, mode) series is set, zeros too."""
    status = np.array([0, 1, 3, 0, 2, 3], dtype=np.int8)
    isolated = np.array([False, False, True, True, False, False])
    counts = pool_counts(status, isolated)
    assert counts.tolist() == [[1, 1, 1, 1], [1, 0, 0, 1]]
    registry = CollectorRegistry()
    WorkerMetrics(registry).set_pools(5, counts)
    pools = "marginwatch_pools"
    assert sample(registry, pools, partition="5", status="liquidation", margin_mode="cross") == 1
    assert sample(registry, pools, partition="5", status="ok", margin_mode="isolated") == 1
    assert sample(registry, pools, partition="5", status="warning", margin_mode="isolated") == 0


# Liquidation map: BTCUSDT is symbol 0 at 50,000, ETHUSDT symbol 1 at 2,500. One row per leg:
# (symbol, quantity, group, liquidation price) and the band its adverse move falls in.
MAP_ROWS = [
    (0, 1.0, 0, 49_800.0),  # long, LP 0.4% below: 0-1%, 50,000
    (0, -0.5, 1, 51_000.0),  # short, LP exactly 2% above: 2-5% (bands are [low, high)), 25,000
    (1, 10.0, 2, NAN),  # no liquidation price: in no band
    (1, 4.0, 3, 2_000.0),  # long, LP exactly 20% below: in no band
    (1, -2.0, 4, 2_700.0),  # short, LP 8% above: 5-10%, 5,000
    (0, 2.0, 5, 47_000.0),  # hedged group (both legs share LP 6% away): 5-10%, 100,000
    (0, -1.0, 5, 47_000.0),  # ... its short leg: 5-10%, 50,000
    (0, 0.2, 6, 50_500.0),  # long already past its LP: 0-1%, 10,000
]


def test_liquidation_map_bands_a_known_book() -> None:
    """Notional at mark per symbol and adverse-move band, for liquidation prices written out."""
    symbol = np.array([row[0] for row in MAP_ROWS], dtype=np.int32)
    quantity = np.array([row[1] for row in MAP_ROWS])
    group = np.array([row[2] for row in MAP_ROWS])
    group_starts = np.append(np.flatnonzero(np.diff(group, prepend=-1)), len(MAP_ROWS))
    price = np.array([row[3] for row in MAP_ROWS])
    marks = np.array([50_000.0, 2_500.0])
    notional = liquidation_band_notional(symbol, quantity, group_starts, price, marks)
    assert notional.tolist() == [
        [60_000.0, 0.0, 25_000.0, 150_000.0, 0.0],
        [0.0, 0.0, 0.0, 5_000.0, 0.0],
    ]


def test_liquidation_map_sums_the_partitions_of_the_process() -> None:
    """Each process exports the sum over its partitions; a partition's map is replaced."""
    registry = CollectorRegistry()
    collector = WorkerMetrics(registry).liquidation_map
    collector.update(0, {"BTCUSDT": np.array([1.0, 2.0, 0.0, 0.0, 0.0])})
    collector.update(1, {"BTCUSDT": np.array([10.0, 0.0, 0.0, 0.0, 5.0])})
    collector.update(1, {"BTCUSDT": np.array([20.0, 0.0, 0.0, 0.0, 5.0])})
    name = "marginwatch_liquidation_map_notional_usdt"
    assert sample(registry, name, symbol="BTCUSDT", band="0-1%") == 21.0
    assert sample(registry, name, symbol="BTCUSDT", band="1-2%") == 2.0
    assert sample(registry, name, symbol="BTCUSDT", band="10-20%") == 5.0


# Instrumentation against real Redis. Marks: BTCUSDT 48,950, ETHUSDT 2,500.
# E: cross long 1 BTC from 50,000, wallet 1,265: MM 195.8, MB 215, ratio 0.911 (margin call);
#    LP = (1,265 − 50,000) / (0.004 − 1) = 48,930.72 (0.04% below: 0-1%).
# I: isolated long 0.5 BTC from 50,000, wallet 1,000: LP = (1,000 − 25,000) / (0.002 − 0.5)
#    = 48,192.77 (1.55% below: 1-2%); ratio 97.9 / 475 (ok); its cross pool is empty.
# S: isolated short 0.2 ETH from 2,500, wallet 30: LP = (30 + 500) / (0.0008 + 0.2) = 2,639.44
#    (5.58% above: 5-10%); ratio 2 / 30 (ok).
# H: cross long 0.1 BTC from 50,000, wallet 10,000: no liquidation price; ratio 19.58 / 9,895.
BOOK = [
    Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, CROSS),)),
    Account("I", D(100), (Position("BTCUSDT", D("0.5"), D(50_000), 40, ISOLATED,
                                   isolated_wallet=D(1000)),)),
    Account("S", D(100), (Position("ETHUSDT", D("-0.2"), D(2_500), 20, ISOLATED,
                                   isolated_wallet=D(30)),)),
    Account("H", D(10_000), (Position("BTCUSDT", D("0.1"), D(50_000), 10, CROSS),)),
]  # fmt: skip
FUND = D(1_000_000)


@pytest.fixture
def runtimes(
    redis_server: RedisServer, redis_client: redis.Redis
) -> Iterator[tuple[WorkerRuntime, ExecutorRuntime]]:
    """BOOK in one partition, both marks published; a worker's and an executor's runtime on one
    Celery app, their metrics on fresh registries."""
    settings = Settings(redis_url=redis_server.url, partitions=1, webhook_max_attempts=3)
    store_accounts(redis_client, BOOK, partitions=1)
    redis_client.set(keys.insurance_fund(0), str(FUND))
    publish(redis_client, BTCUSDT="48950", ETHUSDT="2500")
    app = make_celery(settings, redis_server.url)
    worker = WorkerRuntime(settings, redis_client, TABLES, app)
    executor = ExecutorRuntime(settings, redis_client, TABLES, app)
    worker_tasks.register_tasks(app, worker)
    executor_tasks.register_tasks(app, executor)
    yield worker, executor
    app.close()


@pytest.fixture
def runtime(runtimes: tuple[WorkerRuntime, ExecutorRuntime]) -> WorkerRuntime:
    """The partition worker's runtime."""
    return runtimes[0]


@pytest.fixture
def executor(runtimes: tuple[WorkerRuntime, ExecutorRuntime]) -> ExecutorRuntime:
    """The executor's runtime."""
    return runtimes[1]


def publish(client: redis.Redis, **marks: str) -> int:
    """Publish one tick per symbol, event time now; returns the newest sequence."""
    now = time.time_ns() // 1_000_000
    outcome = Publisher(client).publish([Tick(s, D(p), now) for s, p in marks.items()])
    return outcome.published[-1].sequence


def test_evaluation_moves_the_worker_metrics(runtime: WorkerRuntime) -> None:
    """One evaluation: counters, tick age, pools by status, ratio distribution, actions sent."""
    registry = CollectorRegistry()
    runtime.metrics = WorkerMetrics(registry)
    runtime.metrics.set_pending([0], pending=True)
    run_evaluation(runtime, 0)
    assert sample(registry, "marginwatch_evaluations_total", partition="0") == 1
    assert sample(registry, "marginwatch_positions_evaluated_total", partition="0") == 4
    assert sample(registry, "marginwatch_tick_age_seconds_count", partition="0") == 1
    assert sample(registry, "marginwatch_evaluation_duration_seconds_count", partition="0") == 1
    assert sample(registry, "marginwatch_partition_pending_evaluations", partition="0") == 0
    sequence = sample(registry, "marginwatch_partition_last_evaluated_tick_sequence", partition="0")
    assert sequence == 2
    assert sample(registry, "marginwatch_stale_symbols", partition="0") == 0
    pools = {(status, mode): sample(registry, "marginwatch_pools", partition="0", status=status,
                                    margin_mode=mode)
             for status in STATUSES for mode in ("cross", "isolated")}  # fmt: skip
    assert {key: n for key, n in pools.items() if n} == {
        ("ok", "cross"): 3, ("margin_call", "cross"): 1, ("ok", "isolated"): 2}  # fmt: skip
    ratio = "marginwatch_cross_margin_ratio_bucket"
    assert sample(registry, ratio, partition="0", le="0.1") == 1  # H (E and I, S hold no cross)
    assert sample(registry, ratio, partition="0", le="1.0") == 2  # and E
    assert sample(registry, "marginwatch_actions_sent_total", action="margin_call") == 1
    assert sample(registry, "marginwatch_oldest_due_liquidation_age_seconds", partition="0") == 0
    assert sample(registry, "marginwatch_liquidations_due", partition="0") == 0


def test_liquidation_map_from_the_batch_liquidation_prices(runtime: WorkerRuntime) -> None:
    """The batch path's prices equal the ones written out above, and land in their bands."""
    registry = CollectorRegistry()
    runtime.metrics = WorkerMetrics(registry)
    run_evaluation(runtime, 0)
    prices = runtime.books[0].result.liquidation_price
    assert sorted(prices[~np.isnan(prices)]) == pytest.approx(
        [2_639.442231, 48_192.771084, 48_930.722892], rel=1e-9
    )
    name = "marginwatch_liquidation_map_notional_usdt"
    assert sample(registry, name, symbol="BTCUSDT", band="0-1%") == pytest.approx(48_950)
    assert sample(registry, name, symbol="BTCUSDT", band="1-2%") == pytest.approx(24_475)
    assert sample(registry, name, symbol="ETHUSDT", band="5-10%") == pytest.approx(500)
    assert sample(registry, name, symbol="ETHUSDT", band="0-1%") == 0


def test_the_oldest_due_liquidation_age_is_exported(runtime: WorkerRuntime) -> None:
    """A liquidation due for 90 s (its first sending recorded then): the gauge says 90 s."""
    registry = CollectorRegistry()
    runtime.metrics = WorkerMetrics(registry)
    then = time.time_ns() // 1_000_000 - 90_000
    runtime.client.zadd(keys.due_liquidations(0), {"E|cross": then})
    run_evaluation(runtime, 0)
    age = sample(registry, "marginwatch_oldest_due_liquidation_age_seconds", partition="0")
    assert age is not None
    assert 90 <= age < 100
    assert sample(registry, "marginwatch_liquidations_due", partition="0") == 1
    # Still due after 10 s with nothing queued (its message was lost): sent again, once.
    queued = runtime.client.lrange(actions_queue(0), 0, -1)
    assert len(queued) == 1
    body = json.loads(base64.b64decode(json.loads(queued[0])["body"]))
    assert body[0][0] == [Action(ActionKind.LIQUIDATION, 0, "E", "cross", 1).to_message()]
    runtime.book_gauges_due.last.clear()  # the next evaluation looks again
    run_evaluation(runtime, 0)  # one is queued now: not again
    assert runtime.client.llen(actions_queue(0)) == 1


def test_the_due_liquidations_are_counted(
    runtimes: tuple[WorkerRuntime, ExecutorRuntime],
) -> None:
    """Three pools due (sent just now, none overdue): 3; once the executor skipped one, 2 at
    the next once-a-second measure."""
    runtime, executor = runtimes
    registry = CollectorRegistry()
    runtime.metrics = WorkerMetrics(registry)
    now_ms = time.time_ns() // 1_000_000
    due = {"E|cross": now_ms, "H|cross": now_ms, "gone|cross": now_ms}
    runtime.client.zadd(keys.due_liquidations(0), due)
    run_evaluation(runtime, 0)
    assert sample(registry, "marginwatch_liquidations_due", partition="0") == 3
    assert run_liquidations(executor, [action("H", LIQUIDATE)]) == ["skipped"]
    run_evaluation(runtime, 0)  # within the second: not measured again
    assert sample(registry, "marginwatch_liquidations_due", partition="0") == 3
    runtime.book_gauges_due.last.clear()
    run_evaluation(runtime, 0)
    assert sample(registry, "marginwatch_liquidations_due", partition="0") == 2


def test_queue_lengths_are_exported_by_kind_and_partition(runtime: WorkerRuntime) -> None:
    """After an evaluation, at most once a second: the messages waiting in the partition's
    evaluation, margin-call and liquidation queues."""
    registry = CollectorRegistry()
    runtime.metrics = WorkerMetrics(registry)
    for _ in range(2):
        send_evaluation(runtime.app, 0)
    for _ in range(3):  # three evaluations' liquidations: a message each
        send_actions(runtime.app, 0, [Action(ActionKind.LIQUIDATION, 0, "H", "cross", 1)] * 2)
    run_evaluation(runtime, 0)  # E is at margin call: one batch of margin calls sent
    queued = {kind: sample(registry, "marginwatch_queue_messages", queue_kind=kind, partition="0")
              for kind in ("evaluations", "margin_calls", "liquidations")}  # fmt: skip
    assert queued == {"evaluations": 2, "margin_calls": 1, "liquidations": 3}
    send_evaluation(runtime.app, 0)
    run_evaluation(runtime, 0)  # within the second: not measured again
    name = "marginwatch_queue_messages"
    assert sample(registry, name, queue_kind="evaluations", partition="0") == 2
    runtime.book_gauges_due.last.clear()
    run_evaluation(runtime, 0)
    assert sample(registry, name, queue_kind="evaluations", partition="0") == 3


def test_liquidation_map_is_refreshed_at_most_once_a_second(runtime: WorkerRuntime) -> None:
    """A second evaluation within the second keeps the map it computed first."""
    registry = CollectorRegistry()
    runtime.metrics = WorkerMetrics(registry)
    run_evaluation(runtime, 0)
    publish(runtime.client, BTCUSDT="60000")
    run_evaluation(runtime, 0)
    name = "marginwatch_liquidation_map_notional_usdt"
    assert sample(registry, name, symbol="BTCUSDT", band="0-1%") == pytest.approx(48_950)
    assert sample(registry, "marginwatch_evaluations_total", partition="0") == 2


def test_stale_symbols_count_held_symbols_without_a_recent_tick(runtime: WorkerRuntime) -> None:
    """ETHUSDT's only tick is a minute old: one stale symbol of the two held."""
    old = time.time_ns() // 1_000_000 - 60_000
    runtime.client.delete(keys.PRICES)
    Publisher(runtime.client).publish([Tick("ETHUSDT", D(2500), old)])
    publish(runtime.client, BTCUSDT="48950")
    registry = CollectorRegistry()
    runtime.metrics = WorkerMetrics(registry)
    run_evaluation(runtime, 0)
    assert sample(registry, "marginwatch_stale_symbols", partition="0") == 1


def action(account_id: str, kind: ActionKind) -> Action:
    """An action on the cross pool triggered by a tick two seconds ago."""
    return Action(kind, 0, account_id, "cross", 1, 1, time.time_ns() // 1_000_000 - 2_000)


CALL, RESOLVED, LIQUIDATE = (
    ActionKind.MARGIN_CALL, ActionKind.MARGIN_CALL_RESOLVED, ActionKind.LIQUIDATION)  # fmt: skip


def test_executor_actions_move_the_executor_metrics(executor: ExecutorRuntime) -> None:
    """Margin call once, liquidation with its notional and the fund, skips, the resolution."""
    registry = CollectorRegistry()
    executor.metrics = ExecutorMetrics(registry)
    executor.metrics.insurance_fund.read = insurance_fund_reader(executor.client, [0])
    assert run_margin_calls(executor, [action("E", CALL)]) == ["sent"]
    assert run_margin_calls(executor, [action("E", CALL)]) == ["duplicate"]
    assert sample(registry, "marginwatch_margin_calls_total", margin_mode="cross") == 1
    publish(executor.client, BTCUSDT="52000")  # E: 208 / 3,265, below the re-arm level
    assert run_resolution(executor, action("E", RESOLVED)) == "sent"
    publish(executor.client, BTCUSDT="48000")
    assert run_liquidations(executor, [action("E", LIQUIDATE)])[0] == "liquidated"
    assert run_liquidations(executor, [action("H", LIQUIDATE)])[0] == "skipped"
    assert run_liquidations(executor, [action("nobody", LIQUIDATE)])[0] == "skipped"
    assert sample(registry, "marginwatch_liquidations_total", margin_mode="cross") == 1
    # E closes 1 BTC at 48,000; 1,265 − 2,000 leaves 735 for the fund to cover, no fee.
    notional = sample(registry, "marginwatch_liquidated_notional_usdt_total", symbol="BTCUSDT")
    assert notional == 48_000
    assert sample(registry, "marginwatch_insurance_fund_usdt", partition="0") == float(FUND - 735)
    skipped = "marginwatch_liquidations_skipped_total"
    assert sample(registry, skipped, reason="rescued") == 1
    assert sample(registry, skipped, reason="unavailable") == 1
    resolutions = "marginwatch_margin_call_resolutions_total"
    assert sample(registry, resolutions, margin_mode="cross") == 1
    latency = "marginwatch_tick_to_action_latency_seconds"
    for name in ("margin_call", "liquidate", "margin_call_resolved"):
        assert sample(registry, latency + "_count", action=name) == 1
    assert sample(registry, latency + "_bucket", action="liquidate", le="1.0") == 0
    assert sample(registry, latency + "_bucket", action="liquidate", le="2.5") == 1


CAPACITY = "marginwatch_liquidation_capacity_per_second"


def test_liquidation_capacity_is_liquidations_per_second_of_their_cost() -> None:
    """No sample before the first task; then liquidations over the seconds their tasks took,
    over the last CAPACITY_WINDOW_TASKS tasks; idle, the last value stays."""
    registry = CollectorRegistry()
    capacity = ExecutorMetrics(registry).liquidation_capacity
    assert sample(registry, CAPACITY) is None
    capacity.observe(3, 0.01)  # a batch of three
    capacity.observe(1, 0.03)
    assert sample(registry, CAPACITY) == pytest.approx(4 / 0.04)
    for _task in range(CAPACITY_WINDOW_TASKS):  # pushes the first two out of the window
        capacity.observe(10, 0.5)
    assert sample(registry, CAPACITY) == pytest.approx(20.0)
    assert sample(registry, CAPACITY) == pytest.approx(20.0)  # a scrape changes nothing


def test_liquidation_tasks_measure_the_executor_capacity(executor: ExecutorRuntime) -> None:
    """A batch's liquidations, liquidated or skipped, are one task of three over the seconds it
    took, and the gauge is their quotient. An empty batch (its messages all bad) measures
    nothing."""
    registry = CollectorRegistry()
    executor.metrics = ExecutorMetrics(registry)
    assert run_liquidations(executor, []) == []
    assert sample(registry, CAPACITY) is None
    publish(executor.client, BTCUSDT="48000")
    batch = [action(account_id, LIQUIDATE) for account_id in ("E", "H", "nobody")]
    assert run_liquidations(executor, batch) == ["liquidated", "skipped", "skipped"]
    ((liquidations, seconds),) = executor.metrics.liquidation_capacity.tasks()
    assert liquidations == 3
    assert seconds > 0
    assert sample(registry, CAPACITY) == pytest.approx(3 / seconds)


def test_bad_action_messages_are_left_out_and_counted(executor: ExecutorRuntime) -> None:
    """A batch with a malformed message and a misrouted one: the good one is executed."""
    registry = CollectorRegistry()
    executor.metrics = ExecutorMetrics(registry)
    good = action("E", CALL).to_message()
    misrouted = {**good, "account_id": "H", "partition": 3}
    batch = [good, {"schema": 1, "kind": "margin_call"}, misrouted]
    assert run_margin_calls(executor, parse_actions(executor, batch)) == ["sent"]
    assert parse_actions(executor, {"not": "a list"}) == []
    bad = "marginwatch_bad_records_total"
    assert sample(registry, bad, component="executor", kind="action") == 3
    assert sample(registry, bad, component="executor", kind="tick") == 0


def test_insurance_fund_is_exported_only_when_it_can_be_read(redis_client: redis.Redis) -> None:
    """Each served partition's ledger; no reader or a failing Redis: no sample."""
    registry = CollectorRegistry()
    metrics = ExecutorMetrics(registry)
    name = "marginwatch_insurance_fund_usdt"
    assert sample(registry, name, partition="0") is None
    metrics.insurance_fund.read = insurance_fund_reader(redis_client, [0, 2])
    assert sample(registry, name, partition="0") == 0
    redis_client.set(keys.insurance_fund(0), "1234.5")
    redis_client.set(keys.insurance_fund(1), "99")  # not served
    redis_client.set(keys.insurance_fund(2), "-34.5")  # a ledger may go negative
    assert sample(registry, name, partition="0") == 1234.5
    assert sample(registry, name, partition="1") is None
    assert sample(registry, name, partition="2") == -34.5
    no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    gone = redis.Redis(port=free_port(), retry=no_retry)
    metrics.insurance_fund.read = insurance_fund_reader(gone, [0])
    assert sample(registry, name, partition="0") is None


def outbox_entry(client: redis.Redis, partition: int, seconds_ago: float) -> str:
    """A delivery written to the partition's outbox ``seconds_ago``; its id."""
    entry_id = f"{time.time_ns() // 1_000_000 - int(seconds_ago * 1000)}-0"
    client.xadd(keys.webhook_outbox(partition), {"url": "http://127.0.0.1:9/"}, id=entry_id)
    return entry_id


def test_the_oldest_pending_webhook_delivery_age_is_exported(redis_client: redis.Redis) -> None:
    """Read at scrape: the oldest delivery unread, taken and unacknowledged, or waiting for a
    retry; 0 with none; no sample while Redis cannot be read."""
    registry = CollectorRegistry()
    metrics = ExecutorMetrics(registry)
    metrics.oldest_webhook_delivery.read = oldest_webhook_delivery_reader(redis_client, [0, 1])

    def age(partition: str = "0") -> float | None:
        return sample(registry, "marginwatch_oldest_webhook_delivery_age_seconds",
                      partition=partition)  # fmt: skip

    assert (age(), age("1")) == (0, 0)  # no outbox yet
    first, second = (outbox_entry(redis_client, 0, ago) for ago in (50, 40))
    assert 50 <= (age() or 0) < 55  # unread, no deliverer group yet
    outbox.ensure_group(redis_client, 0)
    assert outbox.read_new(redis_client, 0, "deliverer-1", 1)[0][0] == first
    assert 50 <= (age() or 0) < 55  # taken, not acknowledged
    outbox.retry_later(redis_client, 0, first, 1, time.time_ns() // 1_000_000 + 60_000)
    assert 50 <= (age() or 0) < 55  # waiting for its retry
    outbox.delivered(redis_client, 0, first)
    assert 40 <= (age() or 0) < 45  # the second, unread
    entry = outbox.read_new(redis_client, 0, "deliverer-1", 1)[0]
    outbox.dead_letter(redis_client, 0, entry, 5, "refused")
    assert (age(), age("1")) == (0, 0)
    assert second == entry[0]
    no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    gone = redis.Redis(port=free_port(), retry=no_retry)
    metrics.oldest_webhook_delivery.read = oldest_webhook_delivery_reader(gone, [0])
    assert age() is None


def test_applier_steps_count_account_events(executor: ExecutorRuntime) -> None:
    """The applier's on_step hook counts an accepted deposit and a rejected event."""
    registry = CollectorRegistry()
    metrics = ExecutorMetrics(registry)
    deposit = {"type": "deposit", "account_id": "H", "amount": "10", "event_id": "d-1"}
    executor.client.xadd(keys.account_events(0), {"event": json.dumps(deposit)})
    executor.client.xadd(keys.account_events(0), {"event": "not json"})
    stop = threading.Event()

    def on_step(counts: Any) -> None:
        observe_applied(metrics, counts)
        stop.set()

    run_applier(executor.client, TABLES, 1, [0], "test", stop, idle_wait_ms=10, on_step=on_step)
    assert sample(registry, "marginwatch_account_events_total", outcome="accepted") == 1
    assert sample(registry, "marginwatch_account_events_total", outcome="rejected") == 1


class Receiver(BaseHTTPRequestHandler):
    """Accepts every POST."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_action_tasks_retry_redis_errors_and_their_signals_are_counted(
    executor: ExecutorRuntime,
) -> None:
    """Every action task retries a Redis connection error (5 times, with backoff); a retry or
    a final failure of any of them counts under its action; a liquidation on a dead Redis
    counts one Redis error per attempt."""
    for name in (TASK_LIQUIDATE, TASK_MARGIN_CALLS):
        task = executor.app.tasks[name]
        assert (task.autoretry_for, task.max_retries) == (REDIS_ERRORS, 5)
    registry = CollectorRegistry()
    executor.metrics = ExecutorMetrics(registry)
    for _attempt in range(5):
        count_task_signal(executor.metrics, TASK_LIQUIDATE, "retry")
    count_task_signal(executor.metrics, TASK_LIQUIDATE, "failure")
    count_task_signal(executor.metrics, TASK_MARGIN_CALLS, "retry")
    assert sample(registry, "marginwatch_action_retries_total", action="liquidate") == 5
    assert sample(registry, "marginwatch_action_failures_total", action="liquidate") == 1
    assert sample(registry, "marginwatch_action_retries_total", action="margin_call") == 1
    assert sample(registry, "marginwatch_action_failures_total", action="margin_call") == 0
    no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    executor.client = redis.Redis(port=free_port(), retry=no_retry)
    with pytest.raises(redis.ConnectionError):
        run_liquidations(executor, [action("E", LIQUIDATE)])[0]
    assert sample(registry, "marginwatch_redis_errors_total", component="executor") == 1


def test_producer_stats_move_the_producer_metrics(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Two accepted ticks, an unknown symbol and a malformed row rejected, the newest time."""
    path = tmp_path / "ticks.csv"
    rows = ["BTCUSDT,1700000000000,100", "DOGEUSDT,1700000000100,1", "BTCUSDT,oops",
            "BTCUSDT,1700000000200,101"]  # fmt: skip
    path.write_text("symbol,event_time,mark_price\n" + "\n".join(rows) + "\n")
    registry = CollectorRegistry()
    stats = ProducerStats(metrics=ProducerMetrics(registry))
    validator = TickValidator({"BTCUSDT"})
    source = replay_source(path, speed=0)
    run_producer(redis_client, source, validator, Publisher(redis_client), stats=stats)
    assert sample(registry, "marginwatch_ticks_accepted_total") == 2
    assert sample(registry, "marginwatch_ticks_rejected_total", reason="unknown_symbol") == 1
    assert sample(registry, "marginwatch_ticks_rejected_total", reason="malformed") == 1
    newest = sample(registry, "marginwatch_producer_last_tick_timestamp_seconds")
    assert newest == 1_700_000_000.2


def test_producer_counts_redis_errors(redis_client: redis.Redis, tmp_path: Path) -> None:
    """A batch dropped because Redis failed is a producer Redis error."""
    path = tmp_path / "ticks.csv"
    path.write_text("symbol,event_time,mark_price\nBTCUSDT,1700000000000,100\n")
    registry = CollectorRegistry()
    stats = ProducerStats(metrics=ProducerMetrics(registry))
    gone = redis.Redis(port=free_port(), retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
    run_producer(redis_client, replay_source(path, speed=0), TickValidator({"BTCUSDT"}),
                 Publisher(gone), stats=stats, publish_retry_seconds=0.01)  # fmt: skip
    assert sample(registry, "marginwatch_redis_errors_total", component="producer") == 1


# Serving.


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_serve_metrics_answers_on_its_port() -> None:
    """GET /metrics returns the registry in the text format; port 0 or None serves nothing."""
    registry = CollectorRegistry()
    ProducerMetrics(registry).ticks_accepted.inc(3)
    assert serve_metrics(registry, 0) is None
    assert serve_metrics(registry, None) is None
    server = serve_metrics(registry, free_port(), addr="127.0.0.1")
    assert server is not None
    try:
        assert "marginwatch_ticks_accepted_total 3.0" in fetch(metrics_url(server)).splitlines()
    finally:
        server.shutdown()
        server.server_close()


def test_a_daemon_whose_metrics_port_is_taken_exits_2(redis_server: RedisServer) -> None:
    """The worker and the producer refuse to run without their metrics; one line says why."""
    taken = HTTPServer(("0.0.0.0", 0), Receiver)
    port = taken.server_address[1]
    env = {**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url, "MARGINWATCH_PARTITIONS": "1",
           "MARGINWATCH_METRICS_PORT": str(port)}  # fmt: skip
    try:
        for command in (["worker", "--partitions", "0"], ["producer", "--duration", "5"]):
            argv = [sys.executable, "-m", "marginwatch", *command]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            assert done.returncode == 2, done.stderr
            assert f"MARGINWATCH_METRICS_PORT={port}: cannot listen" in done.stderr
    finally:
        taken.server_close()


def test_demo_gives_each_child_its_own_metrics_port() -> None:
    """Four children, ports base to base + 3, printed by name; base 0 serves none."""
    ports = metrics_ports(9101, len(children()))
    assert ports == [9101, 9102, 9103, 9104]
    lines = metrics_lines(children(), ports).splitlines()
    assert lines[1] == "metrics of worker 0-3: http://127.0.0.1:9102/metrics"
    assert [line.split(":")[0] for line in lines] == [
        "metrics of executor", "metrics of worker 0-3", "metrics of worker 4-7",
        "metrics of producer"]  # fmt: skip
    assert metrics_lines(children(), metrics_ports(0, 4)) == ""


def scraped(port: int) -> dict[str, float]:
    """The samples served on ``port`` (empty while it does not answer)."""
    try:
        text = fetch(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return {}
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in pairs}


def test_every_daemon_serves_metrics_on_its_port(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Worker, executor and producer processes each answer on MARGINWATCH_METRICS_PORT."""
    store_accounts(redis_client, BOOK[3:], partitions=1)  # H: no synthetic move liquidates it
    redis_client.set(keys.insurance_fund(0), str(FUND))
    env = {**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url, "MARGINWATCH_PARTITIONS": "1"}
    commands = {
        "worker": ["worker", "--partitions", "0", "--loglevel", "WARNING"],
        "executor": ["executor", "--loglevel", "WARNING"],
        "producer": ["producer", "--symbols", "BTCUSDT,ETHUSDT", "--rate", "5"],
    }
    ports = {name: free_port() for name in commands}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "marginwatch", *command],
            env={**env, "MARGINWATCH_METRICS_PORT": str(ports[name])},
            stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
        )
        for name, command in commands.items()
    ]  # fmt: skip
    try:
        wait_for(lambda: scraped(ports["producer"]).get("marginwatch_ticks_accepted_total", 0) > 0,
                 "the producer's accepted ticks")  # fmt: skip
        evaluations = 'marginwatch_evaluations_total{partition="0"}'
        wait_for(lambda: scraped(ports["worker"]).get(evaluations, 0) > 0, "an evaluation")
        fund = 'marginwatch_insurance_fund_usdt{partition="0"}'
        wait_for(lambda: scraped(ports["executor"]).get(fund) == float(FUND), "the fund")
        webhooks = 'marginwatch_oldest_webhook_delivery_age_seconds{partition="0"}'
        assert scraped(ports["executor"]).get(webhooks) == 0
        liquidations = 'marginwatch_queue_messages{partition="0",queue_kind="liquidations"}'
        wait_for(lambda: scraped(ports["worker"]).get(liquidations) == 0, "the liquidation queue")
        due = 'marginwatch_liquidations_due{partition="0"}'
        assert scraped(ports["worker"]).get(due) == 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

"""Stress scenarios as metrics: the configured scenarios computed after an evaluation, at most
once per interval, stored in Redis and exported at scrape (real redis-server, the worker's own
task body, a registry of the test's own); and the settings that configure them.

The book, written out by hand (marks BTCUSDT 50,000 and ETHUSDT 2,500):

* bob: cross long 1 BTCUSDT from 50,000, wallet 5,000;
* alice: cross long 10 ETHUSDT from 2,500, wallet 2,000.

``BTCUSDT:-20%``: BTC at 40,000, bob's UPNL −10,000, his margin balance −5,000: liquidated, a
deficit of 5,000 and 40,000 of BTCUSDT notional; alice is unmoved (ratio about 0.06).
``BTCUSDT:-5%``: BTC at 47,500, bob's balance 2,500 against a maintenance margin of
47,500 × 0.4% = 190: ok; nothing liquidated.
``*:-30%``: BTC at 35,000, bob's balance −10,000; ETH at 1,750, alice's UPNL −7,500 and balance
−5,500: both liquidated, deficit 15,500, BTCUSDT notional 35,000 and ETHUSDT's 17,500 as
``other`` (no scenario names ETHUSDT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from marginwatch.base import keys
from marginwatch.base.metrics import WorkerMetrics
from marginwatch.base.settings import ConfigurationError, Settings, read_settings
from marginwatch.base.stress_plan import stress_plan
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.producer.publisher import Publisher
from marginwatch.runtime.celery_app import make_celery
from marginwatch.state.accounts import store_accounts
from marginwatch.worker import stress_metrics
from marginwatch.worker.evaluation import (
    EvaluationOutcome,
    evaluate_partition,
    finish_evaluation,
)
from marginwatch.worker.tasks import WorkerRuntime, register_tasks, run_evaluation

D = Decimal
CROSS = MarginMode.CROSS
TABLES = dict(default_tables())
SYMBOLS = sorted(TABLES)
BOOK = [
    Account("bob", D(5_000), (Position("BTCUSDT", D(1), D(50_000), 20, CROSS),)),
    Account("alice", D(2_000), (Position("ETHUSDT", D(10), D(2_500), 20, CROSS),)),
]
SCENARIOS = ["BTCUSDT:-20%", "BTCUSDT:-5%", "*:-30%"]
INTERVAL_SECONDS = 30.0
WAIT_SECONDS = 60.0  # for a computation on the monitor's thread


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def evaluated(runtime: WorkerRuntime) -> EvaluationOutcome:
    """One evaluation of partition 0 through the task's body, and the stress computation it
    started, waited for (it runs on the monitor's thread)."""
    outcome = run_evaluation(runtime, 0)
    assert runtime.stress is not None
    assert runtime.stress.jobs.running[0].result(timeout=WAIT_SECONDS) is not None
    return outcome


def stress_settings(redis_server: RedisServer, **overrides: object) -> Settings:
    values: dict[str, object] = {"redis_url": redis_server.url, "partitions": 1,
                                 "stress_scenarios": SCENARIOS,
                                 "stress_interval_seconds": INTERVAL_SECONDS}  # fmt: skip
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def registry() -> CollectorRegistry:
    """The test's own registry, the worker runtime's."""
    return CollectorRegistry()


@pytest.fixture
def runtime(
    redis_server: RedisServer, redis_client: redis.Redis, registry: CollectorRegistry
) -> Iterator[WorkerRuntime]:
    """The book in one partition, both marks published, a worker runtime whose metrics and
    stress scenarios are on ``registry``."""
    store_accounts(redis_client, BOOK, partitions=1)
    now_ms = time.time_ns() // 1_000_000
    Publisher(redis_client).publish(
        [Tick("BTCUSDT", D(50_000), now_ms), Tick("ETHUSDT", D(2_500), now_ms)]
    )
    settings = stress_settings(redis_server)
    app = make_celery(settings, redis_server.url)
    metrics = WorkerMetrics(registry)
    stress = stress_metrics.stress_monitor(settings, TABLES, redis_client, registry, [0],
                                           metrics.redis_errors)  # fmt: skip
    worker = WorkerRuntime(settings, redis_client, TABLES, app, metrics=metrics, stress=stress)
    register_tasks(app, worker)
    yield worker
    app.close()


def test_an_evaluation_exports_each_scenario_figured_by_hand(
    runtime: WorkerRuntime, registry: CollectorRegistry
) -> None:
    """One evaluation: every scenario's deficit, pools and notional, as the docstring has them,
    at the evaluation's marks; one computation timed."""
    outcome = evaluated(runtime)
    expected = {  # scenario: (deficit, pools liquidated, BTCUSDT notional, other notional)
        "BTCUSDT:-20%": (5_000, 1, 40_000, 0),
        "BTCUSDT:-5%": (0, 0, 0, 0),
        "*:-30%": (15_500, 2, 35_000, 17_500),
    }
    for scenario, (deficit, pools, btc, other) in expected.items():
        labels = {"scenario": scenario, "partition": "0"}
        found = sample(registry, "marginwatch_stress_deficit_usdt", **labels)
        assert found == pytest.approx(deficit, abs=1e-6), scenario
        assert sample(registry, "marginwatch_stress_pools_liquidated", **labels) == pools
        assert sample(registry, "marginwatch_stress_pools_uncertain", **labels) == 0
        notional = "marginwatch_stress_liquidated_notional_usdt"
        assert sample(registry, notional, **labels, symbol="BTCUSDT") == pytest.approx(btc)
        assert sample(registry, notional, **labels, symbol="other") == pytest.approx(other)
        assert sample(registry, notional, **labels, symbol="ETHUSDT") is None  # not named
    computed = sample(registry, "marginwatch_stress_computed_timestamp_seconds", partition="0")
    assert computed == outcome.started_at
    assert sample(registry, "marginwatch_stress_duration_seconds_count", partition="0") == 1


def test_the_book_keeps_the_figures_of_its_marks(runtime: WorkerRuntime) -> None:
    """The scenarios run in a buffer of their own: after them the book's figures are those of
    the marks (both pools ok, bob's UPNL 0), not of the last scenario (both liquidated)."""
    evaluated(runtime)
    result = runtime.book(0).result
    assert result.status.tolist() == [0, 0]
    assert result.upnl.tolist() == [0.0, 0.0]


def test_the_scenarios_are_computed_at_most_once_per_interval(
    runtime: WorkerRuntime, registry: CollectorRegistry
) -> None:
    """Evaluations at 0, 10, 29.9 and 30 s (monotonic, injected): computed at 0 and 30 only."""
    book = runtime.book(0)
    computed = []
    for now in (1_000.0, 1_010.0, 1_029.9, 1_030.0):
        outcome = evaluate_partition(book, runtime.client, runtime.settings)
        finish_evaluation(runtime.client, book, outcome)
        started = stress_metrics.after_evaluation(runtime.stress, runtime.client, book, outcome,
                                                  now)  # fmt: skip
        computed.append(started is not None and started.result(WAIT_SECONDS) is not None)
    assert computed == [True, False, False, True]
    duration = "marginwatch_stress_duration_seconds_count"
    assert sample(registry, duration, partition="0") == 2


def test_a_computation_still_running_is_not_started_again(runtime: WorkerRuntime) -> None:
    """The monitor's thread held up: the computation started at 0 s is still queued at 30 s, so
    none is started then; once it ran, the next one is due again."""
    assert runtime.stress is not None
    book, release = runtime.book(0), threading.Event()
    runtime.stress.jobs.thread.submit(release.wait, WAIT_SECONDS)  # the thread busy until released
    outcome = evaluate_partition(book, runtime.client, runtime.settings)
    finish_evaluation(runtime.client, book, outcome)
    first = stress_metrics.after_evaluation(runtime.stress, runtime.client, book, outcome, 0.0)
    again = stress_metrics.after_evaluation(runtime.stress, runtime.client, book, outcome, 30.0)
    assert first is not None
    assert again is None
    release.set()
    assert first.result(WAIT_SECONDS) is not None
    later = stress_metrics.after_evaluation(runtime.stress, runtime.client, book, outcome, 31.0)
    assert later is not None
    assert later.result(WAIT_SECONDS) is not None


def test_a_change_after_the_evaluation_is_not_in_its_figures(
    runtime: WorkerRuntime, redis_client: redis.Redis
) -> None:
    """The computation works on a copy of the arrays taken by the evaluation: bob's deposit,
    written into the book's rows in place while the computation waits for the thread, is not
    in its figures (BTCUSDT:-20% still takes 5,000 from the fund)."""
    assert runtime.stress is not None
    book, release = runtime.book(0), threading.Event()
    runtime.stress.jobs.thread.submit(release.wait, WAIT_SECONDS)
    outcome = evaluate_partition(book, runtime.client, runtime.settings)
    finish_evaluation(runtime.client, book, outcome)
    started = stress_metrics.after_evaluation(runtime.stress, runtime.client, book, outcome, 0.0)
    assert started is not None
    rich = Account("bob", D(100_000), BOOK[0].positions)
    store_accounts(redis_client, [rich], partitions=1)
    assert book.refresh(redis_client) == 1
    assert 100_000.0 in book.book.pool_wallet.tolist()  # in place, in the same arrays
    release.set()
    figures = started.result(WAIT_SECONDS)
    assert figures is not None
    assert figures.scenarios[0].deficit_usdt == pytest.approx(5_000)


def test_every_worker_serving_the_partition_exports_the_stored_figures(
    runtime: WorkerRuntime, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A second worker of the partition, which computed nothing, exports from Redis the
    figures the first one stored; its own duration histogram has no observation."""
    evaluated(runtime)
    other = CollectorRegistry()
    stress_metrics.stress_monitor(stress_settings(redis_server), TABLES, redis_client, other,
                                  [0], WorkerMetrics(other).redis_errors)  # fmt: skip
    labels = {"scenario": "*:-30%", "partition": "0"}
    assert sample(other, "marginwatch_stress_deficit_usdt", **labels) == pytest.approx(15_500)
    assert sample(other, "marginwatch_stress_duration_seconds_count", partition="0") is None
    stored = json.loads(redis_client.get(keys.partition_stress(0)) or "{}")
    assert [s["scenario"] for s in stored["scenarios"]] == SCENARIOS


def test_a_scenario_not_configured_here_is_not_exported(
    runtime: WorkerRuntime, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A worker configured with one scenario exports that one only of the stored figures."""
    evaluated(runtime)
    other = CollectorRegistry()
    settings = stress_settings(redis_server, stress_scenarios=["BTCUSDT:-20%"])
    stress_metrics.stress_monitor(settings, TABLES, redis_client, other, [0],
                                  WorkerMetrics(other).redis_errors)  # fmt: skip
    exported = {s.labels["scenario"] for family in other.collect() for s in family.samples
                if s.name == "marginwatch_stress_deficit_usdt"}  # fmt: skip
    assert exported == {"BTCUSDT:-20%"}


def test_without_scenarios_nothing_is_computed_stored_or_exported(
    runtime: WorkerRuntime, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """The default, no scenario: no monitor, no key in Redis, no stress metric."""
    fresh = CollectorRegistry()
    settings = stress_settings(redis_server, stress_scenarios=[])
    assert stress_metrics.stress_monitor(settings, TABLES, redis_client, fresh, [0],
                                         WorkerMetrics(fresh).redis_errors) is None  # fmt: skip
    runtime.stress = None
    run_evaluation(runtime, 0)
    assert not redis_client.exists(keys.partition_stress(0))
    names = {family.name for family in fresh.collect()}
    assert not any(name.startswith("marginwatch_stress") for name in names)


def test_betas_move_the_symbols_with_their_base(tmp_path: Path) -> None:
    """ETHUSDT at beta 1.5 to BTCUSDT: BTCUSDT:-20% moves ETHUSDT −30%; others stay."""
    betas = tmp_path / "betas.json"
    betas.write_text('{"ETHUSDT": 1.5}', encoding="utf-8")
    settings = Settings(stress_scenarios=["BTCUSDT:-20%"], stress_betas_file=str(betas),
                        stress_beta_base="BTCUSDT")  # fmt: skip
    plan = stress_plan(settings, SYMBOLS)
    assert plan is not None
    factors = dict(zip(SYMBOLS, plan.factors[0], strict=True))
    assert factors["BTCUSDT"] == pytest.approx(0.8)
    assert factors["ETHUSDT"] == pytest.approx(0.7)
    assert factors["SOLUSDT"] == 1.0
    assert [SYMBOLS[i] for i in plan.named] == ["BTCUSDT"]


# Settings: every bad value is refused at start-up, naming its setting.

BAD_SCENARIOS = {
    "no percent sign": (["BTCUSDT:-20"], "scenario 1: 'BTCUSDT:-20': expected SYMBOL:MOVE%"),
    "down 100%": (["*:-5%", "BTCUSDT:-100%"], "scenario 2: 'BTCUSDT:-100%': the move must be"),
    "a symbol shocked twice": (["BTCUSDT:-5% BTCUSDT:-6%"], "scenario 1: BTCUSDT shocked twice"),
    "a scenario given twice": (["*:-10%", "*:-10.0%"], "scenario 2: *:-10% given twice"),
    "an empty scenario": ([" "], "scenario 1: ' ': expected SYMBOL:MOVE%"),
}


@pytest.mark.parametrize(("scenarios", "message"), BAD_SCENARIOS.values(), ids=BAD_SCENARIOS)
def test_a_bad_scenario_is_refused_naming_the_setting(scenarios: list[str], message: str) -> None:
    environ = {"MARGINWATCH_STRESS_SCENARIOS": json.dumps(scenarios)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        with pytest.raises(ConfigurationError) as refused:
            read_settings()
    assert str(refused.value).startswith(f"MARGINWATCH_STRESS_SCENARIOS: {message}")


def test_a_bad_interval_is_refused_naming_the_setting() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MARGINWATCH_STRESS_INTERVAL_SECONDS", "0")
        with pytest.raises(ConfigurationError, match=r"^MARGINWATCH_STRESS_INTERVAL_SECONDS: "):
            read_settings()


def test_what_needs_the_bracket_tables_is_refused_at_start_up(tmp_path: Path) -> None:
    """A symbol without a table, betas without a base, an unreadable betas file, a beta that
    takes a mark below zero: each names its setting."""
    betas = tmp_path / "betas.json"
    betas.write_text('{"ETHUSDT": 6}', encoding="utf-8")
    refused = {
        "MARGINWATCH_STRESS_SCENARIOS: NOSUCHUSDT has no bracket table": Settings(
            stress_scenarios=["NOSUCHUSDT:-5%"]),
        "MARGINWATCH_STRESS_BETA_BASE: required with MARGINWATCH_STRESS_BETAS_FILE": Settings(
            stress_scenarios=["*:-5%"], stress_betas_file=str(betas)),
        "MARGINWATCH_STRESS_BETAS_FILE: /no/such.json: cannot read": Settings(
            stress_scenarios=["*:-5%"], stress_betas_file="/no/such.json",
            stress_beta_base="BTCUSDT"),
        "MARGINWATCH_STRESS_BETAS_FILE: scenario BTCUSDT:-20%: ETHUSDT would move -120%": Settings(
            stress_scenarios=["BTCUSDT:-20%"], stress_betas_file=str(betas),
            stress_beta_base="BTCUSDT"),
    }  # fmt: skip
    for message, settings in refused.items():
        with pytest.raises(ConfigurationError) as error:
            stress_plan(settings, SYMBOLS)
        assert str(error.value).startswith(message), str(error.value)


def test_a_worker_with_a_bad_scenario_exits_2_naming_the_setting(
    redis_server: RedisServer,
) -> None:
    """The daemon itself: exit status 2 and one line naming the setting, before any work."""
    env = {**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url, "MARGINWATCH_PARTITIONS": "1"}
    for scenarios, message in (
        (["BTCUSDT:+5"], "MARGINWATCH_STRESS_SCENARIOS: scenario 1: "),
        (["XUSDT:-5%"], "MARGINWATCH_STRESS_SCENARIOS: XUSDT has no "),
    ):
        argv = [sys.executable, "-m", "marginwatch", "worker", "--partitions", "0"]
        done = subprocess.run(argv, env=env | {"MARGINWATCH_STRESS_SCENARIOS": json.dumps(
            scenarios)}, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert message in done.stderr

"""The configured stress scenarios (``MARGINWATCH_STRESS_SCENARIOS``) computed over a
partition after its evaluation, at most every ``MARGINWATCH_STRESS_INTERVAL_SECONDS``, and
exported as metrics (``base.stress_metrics``).

After an evaluation (its actions sent), when the interval has passed since this process last
started a computation of the partition's scenarios and none is running, the evaluation hands a
copy of the partition's arrays and of its marks to the monitor's thread (``worker.background``:
at the lowest CPU priority) and returns: the computation is off the evaluation's path, so the
next evaluation does not wait for it (the screen's kernels release the GIL). Each scenario is
one full pass of the screen over the copy at the marks times the scenario's factors
(``engine.stress_screen.screen_scenario``, in a buffer of its own). No exact evaluation runs
here: the figures are the screen's estimate, and ``marginwatch stress`` confirms them exactly.
They go to Redis (``mw:{pN}:stress``) and are exported from there at each scrape by every
worker serving the partition.

The time of the last computation lives in this process's memory, per partition
(``background.PartitionJobs``): a worker holds a partition exclusively while it evaluates it,
so its scenarios are computed at most once per interval; a restarted worker computes them at
its first evaluation. (Two workers serving one range each keep their own time: at most one
computation per interval each.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import redis
from prometheus_client import CollectorRegistry, Counter

from marginwatch.base.settings import Settings
from marginwatch.base.stress_metrics import (
    OTHER_SYMBOLS,
    PartitionStress,
    ScenarioFigures,
    StressMetrics,
    StressReader,
)
from marginwatch.base.stress_plan import StressPlan, stress_plan
from marginwatch.engine import batch
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.stress_screen import ScreenedScenario, screen_scenario
from marginwatch.runtime.observe import REDIS_ERRORS
from marginwatch.state.stress_figures import read_partition_stress, write_partition_stress
from marginwatch.worker.background import PartitionJobs
from marginwatch.worker.evaluation import EvaluationOutcome
from marginwatch.worker.partition import PartitionBook

log = logging.getLogger("marginwatch.worker")


@dataclass
class StressMonitor:
    """A worker's scenarios, their metrics, and when each partition's were last computed."""

    plan: StressPlan
    metrics: StressMetrics
    redis_errors: Counter
    jobs: PartitionJobs  # the stress thread; per partition, the last start (monotonic)


def stress_monitor(
    settings: Settings,
    tables: Mapping[str, BracketTable],
    client: redis.Redis,
    registry: CollectorRegistry,
    partitions: Sequence[int],
    redis_errors: Counter,
) -> StressMonitor | None:
    """The scenarios over books laid out in sorted symbol order (as the worker lays them out),
    their metrics on ``registry`` read from Redis for ``partitions``; ``None`` when none is
    configured (nothing computed, nothing exported)."""
    plan = stress_plan(settings, sorted(tables))
    if plan is None:
        return None
    metrics = StressMetrics(registry, plan.names)
    metrics.figures.read = stress_reader(client, partitions)
    return StressMonitor(
        plan, metrics, redis_errors, PartitionJobs("stress", plan.interval_seconds)
    )


def stress_reader(client: redis.Redis, partitions: Sequence[int]) -> StressReader:
    """Reads the partitions' figures for a scrape (``None`` when Redis fails)."""

    def read() -> Mapping[int, PartitionStress] | None:
        try:
            return read_partition_stress(client, partitions)
        except redis.RedisError:
            return None

    return read


def after_evaluation(
    monitor: StressMonitor | None,
    client: redis.Redis,
    book: PartitionBook,
    outcome: EvaluationOutcome,
    now: float | None = None,
) -> Future[PartitionStress | None] | None:
    """If due at ``now`` (monotonic seconds; default the clock's) and none is running, start
    the computation of the partition's scenarios at the evaluation's marks, on a copy of its
    arrays; the computation (its figures, once timed and stored), if one was started."""
    if monitor is None or not monitor.jobs.claim(book.partition, now):
        return None
    copy = book.book.copy()
    marks, partition = outcome.marks.copy(), book.partition
    return monitor.jobs.start(partition, compute_and_store, monitor, client, partition, copy,
                              book.brackets, marks, outcome.started_at)  # fmt: skip


def compute_and_store(
    monitor: StressMonitor, client: redis.Redis, partition: int, book: batch.Book,
    brackets: batch.BracketArrays, marks: batch.FloatArray, computed_at: float,
) -> PartitionStress | None:  # fmt: skip
    """The scenarios over ``book`` at ``marks``, timed and stored (``None``: they failed, and
    the error is logged: nothing else would see it in this thread)."""
    try:
        started = time.perf_counter()
        figures = partition_stress(monitor.plan, book, brackets, marks, computed_at)
        monitor.metrics.duration.labels(str(partition)).observe(time.perf_counter() - started)
        write_partition_stress(client, partition, figures)
    except REDIS_ERRORS:
        monitor.redis_errors.inc()
        log.warning("partition %d: stress figures not stored (Redis)", partition)
        return None
    except Exception:
        log.exception("partition %d: stress scenarios failed", partition)
        return None
    return figures


def partition_stress(
    plan: StressPlan, book: batch.Book, brackets: batch.BracketArrays, marks: batch.FloatArray,
    computed_at: float,
) -> PartitionStress:  # fmt: skip
    """Every scenario over ``book`` at ``marks`` (read at ``computed_at``), in one buffer of
    the screen."""
    assert brackets.symbols == plan.symbols, "books are laid out in the plan's symbol order"
    out = batch.BatchResult.allocate(book)
    row_pools = batch.row_pool(book)
    scenarios = tuple(
        scenario_figures(plan, number, screen_scenario(book, brackets, row_pools,
                         marks * plan.factors[number], plan.thresholds, out))
        for number in range(len(plan.scenarios))
    )  # fmt: skip
    return PartitionStress(computed_at, scenarios)


def scenario_figures(plan: StressPlan, number: int, screened: ScreenedScenario) -> ScenarioFigures:
    """The figures exported of scenario ``number``: the liquidated notional of each named
    symbol, and of every other symbol together."""
    notional = screened.liquidated_notional
    by_symbol = {plan.symbols[index]: float(notional[index]) for index in plan.named}
    by_symbol[OTHER_SYMBOLS] = float(np.delete(notional, list(plan.named)).sum())
    return ScenarioFigures(plan.scenarios[number].name, screened.deficit,
                           screened.pools_liquidated, screened.pools_uncertain,
                           by_symbol)  # fmt: skip

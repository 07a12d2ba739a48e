"""The stress metrics: the only place their names are written (``base.metrics`` has the
others).

A partition worker runs the configured scenarios over a partition (``worker.stress_metrics``)
and stores the figures in Redis, one document per partition (``mw:{pN}:stress``); every worker
serving the partition exports them from there at each scrape (``StressCollector``), as an
executor exports the insurance fund. So the figures of a partition are those of its last
computation, whichever worker made it, and two workers serving one range export the same
figures: take ``max by (scenario, partition)`` (or ``(scenario, symbol, partition)``) before
summing. The duration of a computation is a histogram of the process that made it.

The figures are the screen's, in floats (``engine.stress_screen.screen_scenario``): an
estimate within the float error band of ``docs/engine.md``; ``marginwatch stress`` decides
every pool exactly.
Labels are bounded: the configured scenarios, the partitions, and as symbols only those some
configured scenario names, with ``other`` for the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STRESS_DEFICIT = "marginwatch_stress_deficit_usdt"
STRESS_POOLS_LIQUIDATED = "marginwatch_stress_pools_liquidated"
STRESS_POOLS_UNCERTAIN = "marginwatch_stress_pools_uncertain"
STRESS_LIQUIDATED_NOTIONAL = "marginwatch_stress_liquidated_notional_usdt"
STRESS_COMPUTED_TIMESTAMP = "marginwatch_stress_computed_timestamp_seconds"
STRESS_DURATION = "marginwatch_stress_duration_seconds"

# The symbol label of the liquidated notional of every symbol no configured scenario names.
OTHER_SYMBOLS = "other"
STRESS_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class ScenarioFigures:
    """One scenario over one partition, from the screen."""

    scenario: str
    deficit_usdt: float
    pools_liquidated: int
    pools_uncertain: int
    liquidated_notional_usdt: Mapping[str, float]  # named symbols and OTHER_SYMBOLS


@dataclass(frozen=True)
class PartitionStress:
    """A partition's last computation: at the marks of the evaluation that ran it."""

    computed_at: float  # Unix seconds: when that evaluation read its marks
    scenarios: tuple[ScenarioFigures, ...]


def stress_json(figures: PartitionStress) -> str:
    """The document stored in ``mw:{pN}:stress``."""
    scenarios = [vars(found) | {"liquidated_notional_usdt": dict(found.liquidated_notional_usdt)}
                 for found in figures.scenarios]  # fmt: skip
    return json.dumps({"computed_at": figures.computed_at, "scenarios": scenarios})


def parse_stress_json(text: str | bytes) -> PartitionStress:
    """A stored document; ``ValueError`` (``KeyError``, ``TypeError``) if it is not one."""
    document: dict[str, Any] = json.loads(text)
    scenarios = tuple(
        ScenarioFigures(str(s["scenario"]), float(s["deficit_usdt"]), int(s["pools_liquidated"]),
                        int(s["pools_uncertain"]),
                        {str(k): float(v) for k, v in s["liquidated_notional_usdt"].items()})
        for s in document["scenarios"]
    )  # fmt: skip
    return PartitionStress(float(document["computed_at"]), scenarios)


StressReader = Callable[[], Mapping[int, PartitionStress] | None]


class StressCollector(Collector):
    """The served partitions' figures, as ``read`` returns them at each scrape (``None``: Redis
    cannot be read, no sample); only the configured ``scenarios`` are exported."""

    def __init__(self, scenarios: Sequence[str]) -> None:
        self.scenarios = frozenset(scenarios)
        self.read: StressReader = lambda: None

    def describe(self) -> Iterable[Metric]:
        return _families()

    def collect(self) -> Iterable[Metric]:
        deficit, liquidated, uncertain, notional, computed = families = _families()
        for partition, figures in sorted((self.read() or {}).items()):
            label = str(partition)
            computed.add_metric([label], figures.computed_at)
            for found in figures.scenarios:
                if found.scenario not in self.scenarios:
                    continue
                labels = [found.scenario, label]
                deficit.add_metric(labels, found.deficit_usdt)
                liquidated.add_metric(labels, found.pools_liquidated)
                uncertain.add_metric(labels, found.pools_uncertain)
                for symbol, value in sorted(found.liquidated_notional_usdt.items()):
                    notional.add_metric([found.scenario, symbol, label], value)
        return families


def _families() -> list[GaugeMetricFamily]:
    """Deficit, pools liquidated, pools uncertain, liquidated notional, computation time."""
    by_scenario = ["scenario", "partition"]
    return [
        GaugeMetricFamily(STRESS_DEFICIT, "USDT the scenario's liquidations would take from "
                          "the insurance fund (screen estimate)", labels=by_scenario),
        GaugeMetricFamily(STRESS_POOLS_LIQUIDATED, "Pools at liquidation in the scenario",
                          labels=by_scenario),
        GaugeMetricFamily(STRESS_POOLS_UNCERTAIN, "Pools whose status in the scenario the "
                          "screen could not decide (counted by its status)", labels=by_scenario),
        GaugeMetricFamily(STRESS_LIQUIDATED_NOTIONAL, "Notional at the shocked marks of the "
                          "pools at liquidation in the scenario (USDT)",
                          labels=["scenario", "symbol", "partition"]),
        GaugeMetricFamily(STRESS_COMPUTED_TIMESTAMP, "When the evaluation that computed the "
                          "partition's scenarios read its marks (Unix seconds)",
                          labels=["partition"]),
    ]  # fmt: skip


class StressMetrics:
    """A worker's stress metrics, created on ``registry`` (only when scenarios are set)."""

    def __init__(self, registry: CollectorRegistry, scenarios: Sequence[str]) -> None:
        self.duration = Histogram(
            STRESS_DURATION,
            "Duration of one computation of the configured scenarios over a partition",
            ["partition"],
            buckets=STRESS_DURATION_BUCKETS,
            registry=registry,
        )
        self.figures = StressCollector(scenarios)
        registry.register(self.figures)

"""The risk dashboard's stress section: the configured scenarios' figures summed over the
partitions, each partition once (two workers serving one range export the same figures), and
the insurance fund beside them."""

from __future__ import annotations

from dashboards.builder import Grid, now, q, quantiles, series, thresholds
from marginwatch.base import stress_metrics

STRESS_AGE_RED_SECONDS = 300  # ten computations missed at the default 30 s interval


def per_scenario(metric: str, by: str = "scenario") -> str:
    """``metric`` summed ``by`` its labels, each partition counted once."""
    return f"sum by ({by}) (max by ({by}, partition) ({series(metric)}))"


def stress_section(grid: Grid, insurance_fund: str) -> None:
    """Deficits against the fund, pools liquidated, liquidated notional, freshness, cost."""
    deficit = per_scenario(stress_metrics.STRESS_DEFICIT)
    grid.section("Stress scenarios")
    grid.bargauge(
        "Stress deficit by scenario",
        (
            "USDT each configured scenario's liquidations would take from the insurance fund, "
            "summed over the partitions, and the fund beside them (a screen estimate: "
            "marginwatch stress confirms it exactly)."
        ),
        (8, 8),
        "currencyUSD",
        [now(deficit, "{{scenario}}"), now(insurance_fund, "insurance fund")],
    )
    grid.timeseries(
        "Stress deficits and the insurance fund",
        "Each scenario's deficit (USDT) over time, against the insurance fund.",
        (8, 8),
        "currencyUSD",
        [q(deficit, "{{scenario}}"), q(insurance_fund, "insurance fund")],
    )
    grid.bargauge(
        "Pools liquidated by scenario",
        (
            "Pools at liquidation in each scenario, and the pools whose status the screen could "
            "not decide (counted by the screen's status)."
        ),
        (4, 8),
        "short",
        [
            now(per_scenario(stress_metrics.STRESS_POOLS_LIQUIDATED), "{{scenario}}"),
            now(per_scenario(stress_metrics.STRESS_POOLS_UNCERTAIN), "uncertain {{scenario}}"),
        ],
    )
    timestamp = series(stress_metrics.STRESS_COMPUTED_TIMESTAMP)
    grid.stat(
        "Age of the stress figures",
        "Seconds since the oldest partition's scenarios were computed (at its marks then).",
        (4, 8),
        "s",
        [now(f"time() - min(max by (partition) ({timestamp}))", "age")],
        thresholds((None, "green"), (STRESS_AGE_RED_SECONDS, "red")),
    )
    stress_cost(grid)


def stress_cost(grid: Grid) -> None:
    """Liquidated notional by scenario and symbol; how long a partition's computation takes."""
    grid.bargauge(
        "Stress liquidated notional by symbol",
        (
            "Notional (USDT, at the shocked marks) of the pools at liquidation in each scenario, "
            "by symbol: the symbols the scenarios name, and every other one as other."
        ),
        (12, 8),
        "currencyUSD",
        [
            now(
                per_scenario(stress_metrics.STRESS_LIQUIDATED_NOTIONAL, "scenario, symbol"),
                "{{scenario}} {{symbol}}",
            )
        ],
    )
    grid.timeseries(
        "Stress computation duration",
        "How long one computation of every configured scenario over a partition takes.",
        (12, 8),
        "s",
        quantiles(stress_metrics.STRESS_DURATION, "partition", "", "partition {{partition}}"),
    )

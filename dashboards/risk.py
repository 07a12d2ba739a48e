"""The "Risk overview" dashboard: accounts by status, margin calls and liquidations, the
insurance fund, the liquidation map, the margin-ratio distribution and the stress scenarios."""

from __future__ import annotations

from dashboards.builder import (
    BANDS,
    RATIO_BUCKETS,
    STATUS_OVERRIDES,
    SYMBOL,
    Grid,
    Json,
    dashboard,
    liquidation_map,
    now,
    pools_in,
    q,
    rate_by,
    series,
    thresholds,
    variable,
)
from dashboards.stress_panels import stress_section
from marginwatch.base import metrics

# The fund is the sum of the partitions' ledgers, each counted once (fail-over pairs report it
# twice).
NOT_OK = 'status!="ok"'
INSURANCE_FUND_SUM = f"sum(max by (partition) ({series(metrics.INSURANCE_FUND)}))"


def risk_overview() -> Json:
    """Accounts by status, margin calls and liquidations, the insurance fund, the liquidation map
    and the distribution of cross margin ratios."""
    grid = Grid()
    grid.section("Now")
    grid.stat(
        "Accounts by status",
        "Accounts (their cross pools) by status, at each partition's last evaluation.",
        (8, 5),
        "short",
        pools_in("cross"),
        thresholds((None, "text")),
        overrides=STATUS_OVERRIDES,
    )
    grid.stat(
        "Isolated positions by status",
        "Isolated positions (each its own pool) by status.",
        (8, 5),
        "short",
        pools_in("isolated"),
        thresholds((None, "text")),
        overrides=STATUS_OVERRIDES,
    )
    grid.stat(
        "Insurance fund",
        "USDT in the insurance fund: liquidation fees in, deficits of bankrupt pools out.",
        (4, 5),
        "currencyUSD",
        [now(INSURANCE_FUND_SUM, "fund")],
        thresholds((None, "red"), (0, "green")),
    )
    grid.stat(
        "Liquidated notional in range",
        "Notional closed out by liquidations over the dashboard's time range (USDT).",
        (4, 5),
        "currencyUSD",
        [
            now(
                f"sum(increase({series(metrics.LIQUIDATED_NOTIONAL)}[$__range])) or vector(0)",
                "liquidated",
            )
        ],
        thresholds((None, "text")),
    )

    grid.section("Margin calls and liquidations")
    grid.timeseries(
        "Margin calls, resolutions and liquidations per minute",
        (
            "Margin calls sent, margin-call episodes resolved and liquidations carried out by the "
            "executor, by margin mode."
        ),
        (12, 8),
        "opm",
        [
            q(
                rate_by(metrics.MARGIN_CALLS, "margin_mode", scale="60"),
                "margin calls {{margin_mode}}",
            ),
            q(
                rate_by(metrics.MARGIN_CALL_RESOLUTIONS, "margin_mode", scale="60"),
                "resolved {{margin_mode}}",
            ),
            q(
                rate_by(metrics.LIQUIDATIONS, "margin_mode", scale="60"),
                "liquidations {{margin_mode}}",
            ),
        ],
    )
    grid.timeseries(
        "Pools at risk",
        "Cross pools (accounts) and isolated positions that are not ok, by margin mode and status.",
        (12, 8),
        "short",
        [
            q(
                f"sum by (margin_mode, status) ({series(metrics.POOLS, NOT_OK)})",
                "{{margin_mode}} {{status}}",
            )
        ],
    )
    grid.timeseries(
        "Liquidated notional per minute by symbol",
        "Notional closed out by liquidations, per symbol (USDT per minute).",
        (12, 8),
        "currencyUSD",
        [
            q(
                rate_by(metrics.LIQUIDATED_NOTIONAL, "symbol", SYMBOL, scale="60"),
                "{{symbol}}",
            )
        ],
    )
    grid.timeseries(
        "Insurance fund over time",
        "USDT in the insurance fund.",
        (6, 8),
        "currencyUSD",
        [q(INSURANCE_FUND_SUM, "fund")],
        minimum=None,
    )
    grid.timeseries(
        "Liquidations skipped per minute",
        "Liquidations the executor did not carry out (the pool was rescued or is gone), by reason.",
        (6, 8),
        "opm",
        [q(rate_by(metrics.LIQUIDATIONS_SKIPPED, "reason", scale="60"), "{{reason}}")],
    )

    grid.section("Liquidation map")
    grid.table(
        "Liquidation map by symbol",
        (
            "Notional (USDT) that would be liquidated within each band of adverse price move, per "
            "symbol, summed over every partition. Bands are disjoint: within 5% is the sum of the "
            "first three."
        ),
        (12, 10),
        "currencyUSD",
        [
            now(
                f"sum by (symbol, band) ({series(metrics.LIQUIDATION_MAP, SYMBOL)})",
                fmt="table",
            )
        ],
        [
            {
                "id": "groupingToMatrix",
                "options": {"columnField": "band", "rowField": "symbol", "valueField": "Value"},
            },
            {
                "id": "organize",
                "options": {
                    "indexByName": {
                        "symbol\\band": 0,
                        **{band: number for number, band in enumerate(BANDS, start=1)},
                    },
                    "renameByName": {"symbol\\band": "symbol"},
                    "excludeByName": {},
                },
            },
        ],
        BANDS[0],
    )
    grid.bargauge(
        "Notional by adverse move",
        (
            "Notional (USDT) that would be liquidated within each band of adverse price move, over "
            "the selected symbols."
        ),
        (6, 10),
        "currencyUSD",
        [now(liquidation_map([band]), band) for band in BANDS],
    )
    grid.bargauge(
        "Top symbols within a 2% move",
        (
            "The ten symbols with the most notional (USDT) liquidated by an adverse move of 2% or "
            "less."
        ),
        (6, 10),
        "currencyUSD",
        [now(f"topk(10, {liquidation_map(BANDS[:2], by='symbol')})", "{{symbol}}")],
    )
    grid.timeseries(
        "Notional within 5% of liquidation",
        "How the notional (USDT) close to liquidation builds up or drains.",
        (24, 7),
        "currencyUSD",
        [q(liquidation_map(BANDS[:3]), "within 5%"), q(liquidation_map(BANDS[:2]), "within 2%")],
    )

    grid.section("Cross margin ratio distribution")
    grid.bargauge(
        "Cross margin ratio distribution",
        (
            "Accounts per cross margin ratio bucket, now (the gauge histogram's buckets, "
            "de-accumulated). Warning from 70%, margin call from 80%, liquidation from 100%."
        ),
        (8, 9),
        "short",
        [now(RATIO_BUCKETS, "{{le}}", fmt="heatmap")],
    )
    grid.heatmap(
        "Cross margin ratio over time",
        "Accounts per cross margin ratio bucket, over time.",
        (8, 9),
        "percentunit",
        q(RATIO_BUCKETS, "{{le}}", fmt="heatmap"),
    )
    grid.timeseries(
        "Cross margin ratio quantiles",
        (
            "Median and 99th percentile of the cross margin ratio over every account (interpolated "
            "within buckets), and the mean."
        ),
        (8, 9),
        "percentunit",
        [
            q(f"histogram_quantile(0.5, {RATIO_BUCKETS})", "p50"),
            q(f"histogram_quantile(0.99, {RATIO_BUCKETS})", "p99"),
            q(
                (
                    f"sum({series(metrics.CROSS_MARGIN_RATIO + '_gsum')}) / "
                    f"sum({series(metrics.CROSS_MARGIN_RATIO + '_gcount')})"
                ),
                "mean",
            ),
        ],
    )
    stress_section(grid, INSURANCE_FUND_SUM)
    return dashboard(
        "marginwatch-risk",
        "marginwatch / Risk overview",
        (
            "Accounts by status, margin calls, liquidations, the insurance fund, the liquidation "
            "map, the margin ratio distribution and the stress scenarios."
        ),
        grid,
        [variable("symbol", metrics.LIQUIDATION_MAP)],
    )

"""Write the Grafana dashboards of marginwatch as JSON, deterministically, from plain dicts.

    .venv/bin/python dashboards/generate.py           # (re)write dashboards/*.json
    .venv/bin/python dashboards/generate.py --check   # exit 1 if a committed file is out of date

Every panel and variable queries the Prometheus datasource with uid ``prometheus`` (provisioned
by docker-compose). docs/operations.md describes every panel.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
DATASOURCE: Json = {"type": "prometheus", "uid": "prometheus"}
GRID_WIDTH = 24
SCHEMA_VERSION = 39
TAG = "marginwatch"
RATE_INTERVAL = "$__rate_interval"

STATUS_COLORS = {"ok": "green", "warning": "yellow", "margin_call": "orange", "liquidation": "red"}
BANDS = ("0-1%", "1-2%", "2-5%", "5-10%", "10-20%")
PARTITION = 'partition=~"$partition"'
SYMBOL = 'symbol=~"$symbol"'
WORKER_UP = 'up{job="marginwatch-worker"}'
SERVICES_UP = 'up{job=~"marginwatch-producer|marginwatch-executor"}'
RATIO_BUCKETS = "sum by (le) (marginwatch_cross_margin_ratio_bucket)"


# Queries --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and the legend of its series."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"


def q(expr: str, legend: str = "", fmt: str = "time_series") -> Query:
    """A range query (time series panels)."""
    return Query(expr, legend, instant=False, fmt=fmt)


def now(expr: str, legend: str = "", fmt: str = "time_series") -> Query:
    """An instant query (stats, bar gauges, tables)."""
    return Query(expr, legend, instant=True, fmt=fmt)


def rate_by(metric: str, by: str, selector: str = "", scale: str = "") -> str:
    """``sum by (by) (rate(metric{selector}[$__rate_interval]))``, times ``scale`` if given."""
    grouping = f" by ({by}) " if by else ""
    matchers = f"{{{selector}}}" if selector else ""
    expr = f"sum{grouping}(rate({metric}{matchers}[{RATE_INTERVAL}]))"
    return f"{expr} * {scale}" if scale else expr


def quantiles(metric: str, by: str, selector: str, legend: str) -> list[Query]:
    """p50 and p99 of histogram ``metric`` per ``by``, from the rate of its buckets."""
    buckets = rate_by(f"{metric}_bucket", f"le, {by}", selector)
    return [
        q(f"histogram_quantile({p}, {buckets})", f"p{round(p * 100)} {legend}") for p in (0.5, 0.99)
    ]


def pools_in(margin_mode: str) -> list[Query]:
    """One instant query per status, in status order, 0 when no pool has it."""
    selector = f'margin_mode="{margin_mode}"'
    return [
        now(f'sum(marginwatch_pools{{{selector}, status="{status}"}}) or vector(0)', status)
        for status in STATUS_COLORS
    ]


def liquidation_map(bands: Sequence[str], by: str = "") -> str:
    """Notional within ``bands`` of adverse move over the selected symbols, summed ``by``."""
    grouping = f" by ({by}) " if by else ""
    selector = f'{SYMBOL}, band=~"{"|".join(bands)}"'
    return f"sum{grouping}(marginwatch_liquidation_map_notional_usdt{{{selector}}})"


# Field configuration --------------------------------------------------------------------------


def thresholds(*steps: tuple[float | None, str]) -> Json:
    """Absolute thresholds: ``(None, base colour), (value, colour from value on), ...``."""
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def color_by_name(colors: dict[str, str]) -> list[Json]:
    """Overrides giving the series named like the keys a fixed colour."""
    return [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
        }
        for name, color in colors.items()
    ]


UP_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]
DOWN_IS_RED = {
    "matcher": {"id": "byName", "options": "down"},
    "properties": [{"id": "thresholds", "value": thresholds((None, "green"), (1, "red"))}],
}
STATUS_OVERRIDES = color_by_name(STATUS_COLORS)


# Panels and layout ----------------------------------------------------------------------------


def targets(queries: Sequence[Query]) -> list[Json]:
    return [
        {
            "datasource": DATASOURCE,
            "refId": chr(ord("A") + number),
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "range": not query.instant,
            "instant": query.instant,
            "format": query.fmt,
        }
        for number, query in enumerate(queries)
    ]


def reduce_last() -> Json:
    return {"calcs": ["lastNotNull"], "fields": "", "values": False}


@dataclass
class Grid:
    """Places panels left to right in rows of 24 columns, under section rows; numbers them."""

    panels: list[Json] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0

    def section(self, title: str) -> None:
        self._next_line()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": self._place(GRID_WIDTH, 1),
            }
        )
        self._next_line()

    def panel(
        self,
        kind: str,
        title: str,
        description: str,
        size: tuple[int, int],
        queries: Sequence[Query],
        **parts: Any,
    ) -> None:
        """Add a panel of ``size`` (width, height) querying Prometheus; ``parts`` complete it."""
        width, height = size
        if self.x + width > GRID_WIDTH:
            self._next_line()
        self.panels.append(
            {
                "type": kind,
                "title": title,
                "description": description,
                "gridPos": self._place(width, height),
                "datasource": DATASOURCE,
                "targets": targets(queries),
                **parts,
            }
        )

    def timeseries(
        self,
        title: str,
        description: str,
        size: tuple[int, int],
        unit: str,
        queries: Sequence[Query],
        *,
        overrides: Sequence[Json] = (),
        minimum: float | None = 0,
    ) -> None:
        """Lines over time; the legend a table with the last and the largest value."""
        custom = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
        }
        defaults: Json = {"unit": unit, "color": {"mode": "palette-classic"}, "custom": custom}
        if minimum is not None:
            defaults["min"] = minimum
        legend = {
            "displayMode": "table",
            "placement": "right" if size[0] >= GRID_WIDTH // 2 else "bottom",
            "showLegend": True,
            "calcs": ["lastNotNull", "max"],
        }
        self.panel(
            "timeseries",
            title,
            description,
            size,
            queries,
            fieldConfig={"defaults": defaults, "overrides": list(overrides)},
            options={"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}},
        )

    def stat(
        self,
        title: str,
        description: str,
        size: tuple[int, int],
        unit: str,
        queries: Sequence[Query],
        steps: Json,
        *,
        overrides: Sequence[Json] = (),
        mappings: Sequence[Json] = (),
    ) -> None:
        """The last value of each series, coloured by ``steps`` (or by ``overrides``)."""
        defaults = {
            "unit": unit,
            "color": {"mode": "thresholds"},
            "thresholds": steps,
            "mappings": list(mappings),
        }
        options = {
            "reduceOptions": reduce_last(),
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value_and_name",
        }
        self.panel(
            "stat",
            title,
            description,
            size,
            queries,
            fieldConfig={"defaults": defaults, "overrides": list(overrides)},
            options=options,
        )

    def bargauge(
        self,
        title: str,
        description: str,
        size: tuple[int, int],
        unit: str,
        queries: Sequence[Query],
    ) -> None:
        """Horizontal bars, one per series, at its last value."""
        defaults = {
            "unit": unit,
            "min": 0,
            "color": {"mode": "continuous-GrYlRd"},
            "thresholds": thresholds((None, "green")),
        }
        options = {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
            "reduceOptions": reduce_last(),
        }
        self.panel(
            "bargauge",
            title,
            description,
            size,
            queries,
            fieldConfig={"defaults": defaults, "overrides": []},
            options=options,
        )

    def heatmap(
        self, title: str, description: str, size: tuple[int, int], unit: str, query: Query
    ) -> None:
        """Buckets over time, as the ``le`` series of a histogram give them (no calculation)."""
        color = {
            "mode": "scheme",
            "scheme": "Oranges",
            "scale": "exponential",
            "exponent": 0.5,
            "steps": 64,
            "reverse": False,
        }
        options = {
            "calculate": False,
            "cellGap": 1,
            "color": color,
            "yAxis": {"axisPlacement": "left", "unit": unit},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"show": True, "yHistogram": False},
            "legend": {"show": True},
            "filterValues": {"le": 1e-9},
        }
        self.panel(
            "heatmap",
            title,
            description,
            size,
            [query],
            fieldConfig={"defaults": {}, "overrides": []},
            options=options,
        )

    def table(
        self,
        title: str,
        description: str,
        size: tuple[int, int],
        unit: str,
        queries: Sequence[Query],
        transformations: Sequence[Json],
        sort_by: str,
    ) -> None:
        """A table of instant queries, transformed, sorted by column ``sort_by``, descending."""
        defaults = {"unit": unit, "custom": {"align": "auto", "cellOptions": {"type": "auto"}}}
        options = {"showHeader": True, "sortBy": [{"displayName": sort_by, "desc": True}]}
        self.panel(
            "table",
            title,
            description,
            size,
            queries,
            fieldConfig={"defaults": defaults, "overrides": []},
            options=options,
            transformations=list(transformations),
        )

    def numbered(self) -> list[Json]:
        """The panels with ids 1, 2, ... in layout order."""
        return [{"id": number, **panel} for number, panel in enumerate(self.panels, start=1)]

    def _place(self, width: int, height: int) -> Json:
        position = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.line_height = max(self.line_height, height)
        return position

    def _next_line(self) -> None:
        self.y += self.line_height
        self.x, self.line_height = 0, 0


def variable(name: str, metric: str) -> Json:
    """A multi-value variable over the values of label ``name`` of ``metric`` (All: ``.*``)."""
    query = f"label_values({metric}, {name})"
    return {
        "type": "query",
        "name": name,
        "label": name,
        "datasource": DATASOURCE,
        "definition": query,
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 3,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


def dashboard(
    uid: str, title: str, description: str, grid: Grid, variables: Sequence[Json]
) -> Json:
    links = [
        {
            "type": "dashboards",
            "title": "marginwatch",
            "tags": [TAG],
            "asDropdown": False,
            "includeVars": False,
            "keepTime": True,
            "targetBlank": False,
        }
    ]
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": links,
        "templating": {"list": list(variables)},
        "panels": grid.numbered(),
    }


# Risk overview --------------------------------------------------------------------------------


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
        [now("max(marginwatch_insurance_fund_usdt)", "fund")],
        thresholds((None, "red"), (0, "green")),
    )
    grid.stat(
        "Liquidated notional in range",
        "Notional closed out by liquidations over the dashboard's time range (USDT).",
        (4, 5),
        "currencyUSD",
        [
            now(
                "sum(increase(marginwatch_liquidated_notional_usdt_total[$__range])) or vector(0)",
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
                rate_by("marginwatch_margin_calls_total", "margin_mode", scale="60"),
                "margin calls {{margin_mode}}",
            ),
            q(
                rate_by("marginwatch_margin_call_resolutions_total", "margin_mode", scale="60"),
                "resolved {{margin_mode}}",
            ),
            q(
                rate_by("marginwatch_liquidations_total", "margin_mode", scale="60"),
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
                'sum by (margin_mode, status) (marginwatch_pools{status!="ok"})',
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
                rate_by("marginwatch_liquidated_notional_usdt_total", "symbol", SYMBOL, scale="60"),
                "{{symbol}}",
            )
        ],
    )
    grid.timeseries(
        "Insurance fund over time",
        "USDT in the insurance fund.",
        (6, 8),
        "currencyUSD",
        [q("max(marginwatch_insurance_fund_usdt)", "fund")],
        minimum=None,
    )
    grid.timeseries(
        "Liquidations skipped per minute",
        "Liquidations the executor did not carry out (the pool was rescued or is gone), by reason.",
        (6, 8),
        "opm",
        [q(rate_by("marginwatch_liquidations_skipped_total", "reason", scale="60"), "{{reason}}")],
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
                f"sum by (symbol, band) (marginwatch_liquidation_map_notional_usdt{{{SYMBOL}}})",
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
                    "sum(marginwatch_cross_margin_ratio_gsum) / "
                    "sum(marginwatch_cross_margin_ratio_gcount)"
                ),
                "mean",
            ),
        ],
    )
    return dashboard(
        "marginwatch-risk",
        "marginwatch / Risk overview",
        (
            "Accounts by status, margin calls, liquidations, the insurance fund, the liquidation "
            "map and the margin ratio distribution."
        ),
        grid,
        [variable("symbol", "marginwatch_liquidation_map_notional_usdt")],
    )


# Pipeline health ------------------------------------------------------------------------------


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
        [now("time() - max(marginwatch_producer_last_tick_timestamp_seconds)", "age")],
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
        [now("max(marginwatch_stale_symbols) or vector(0)", "stale")],
        thresholds((None, "green"), (1, "red")),
    )

    grid.section("Price feed")
    grid.timeseries(
        "Ticks accepted and rejected per second",
        "Ticks the producer published, and the ticks it refused, by reason.",
        (12, 8),
        "ops",
        [
            q(rate_by("marginwatch_ticks_accepted_total", ""), "accepted"),
            q(rate_by("marginwatch_ticks_rejected_total", "reason"), "rejected {{reason}}"),
        ],
    )
    grid.timeseries(
        "Tick age at evaluation",
        "Age of the newest tick when a partition evaluation read it: p50 and p99 per partition.",
        (12, 8),
        "s",
        quantiles(
            "marginwatch_tick_age_seconds", "partition", PARTITION, "partition {{partition}}"
        ),
    )
    grid.timeseries(
        "Stale symbols by partition",
        "Symbols whose mark is stale, as each partition sees them.",
        (12, 7),
        "short",
        [
            q(
                f"max by (partition) (marginwatch_stale_symbols{{{PARTITION}}})",
                "partition {{partition}}",
            )
        ],
    )
    grid.timeseries(
        "Redis errors per second",
        "Redis connection and timeout errors, by component.",
        (12, 7),
        "ops",
        [q(rate_by("marginwatch_redis_errors_total", "component"), "{{component}}")],
    )

    grid.section("Evaluation")
    duration = "marginwatch_evaluation_duration_seconds"
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
                rate_by("marginwatch_evaluations_total", "partition", PARTITION),
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
                rate_by("marginwatch_positions_evaluated_total", "partition", PARTITION),
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
                f"max by (partition) (marginwatch_partition_pending_evaluations{{{PARTITION}}})",
                "partition {{partition}}",
            )
        ],
    )
    sequence = "marginwatch_partition_last_evaluated_tick_sequence"
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
                f"scalar(max({sequence})) - max by (partition) ({sequence}{{{PARTITION}}})",
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
        quantiles("marginwatch_tick_to_action_latency_seconds", "action", "", "{{action}}"),
    )
    grid.timeseries(
        "Actions sent per second",
        "Actions the workers sent to the executor, by action.",
        (12, 8),
        "ops",
        [q(rate_by("marginwatch_actions_sent_total", "action"), "{{action}}")],
    )
    grid.timeseries(
        "Action failures and retries per second",
        "Executor actions that failed for good, and retries, by action.",
        (8, 8),
        "ops",
        [
            q(rate_by("marginwatch_action_failures_total", "action"), "failed {{action}}"),
            q(rate_by("marginwatch_action_retries_total", "action"), "retried {{action}}"),
        ],
    )
    grid.timeseries(
        "Webhook deliveries per second",
        "Margin-call webhook deliveries, by result.",
        (8, 8),
        "ops",
        [q(rate_by("marginwatch_webhook_deliveries_total", "result"), "{{result}}")],
        overrides=color_by_name({"delivered": "green", "retried": "yellow", "failed": "red"}),
    )
    grid.timeseries(
        "Account events per second",
        "Account events the executor applied, by outcome.",
        (8, 8),
        "ops",
        [q(rate_by("marginwatch_account_events_total", "outcome"), "{{outcome}}")],
    )
    return dashboard(
        "marginwatch-pipeline",
        "marginwatch / Pipeline health",
        "Services up, the price feed, partition evaluations and the actions that follow.",
        grid,
        [variable("partition", "marginwatch_evaluations_total")],
    )


# Output ---------------------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], Json]] = {
    "marginwatch-risk.json": risk_overview,
    "marginwatch-pipeline.json": pipeline_health,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write dashboards/*.json.")
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote dashboards/{name}")
    if stale:
        print(f"out of date, run dashboards/generate.py: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

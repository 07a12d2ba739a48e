"""The builder of marginwatch's Grafana dashboards: PromQL helpers, field configuration,
panels laid out on a grid, variables and the dashboard envelope. Each dashboard is a module of
its own (``risk``, ``pipeline``); metric names come from ``marginwatch.base.metrics``.

Every panel, target and query variable names the datasource by the variable ``datasource``
(any Prometheus of the Grafana it is imported into: the import form asks for ``DS_PROMETHEUS``,
the variable's first value), and every series selector is narrowed to the variables ``job`` and
``instance``. docs/operations.md describes every panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from marginwatch.base import metrics

Json = dict[str, Any]

DATASOURCE_VARIABLE = "datasource"
DATASOURCE: Json = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
# The import form's input: Grafana replaces "${DS_PROMETHEUS}" with the datasource chosen.
DATASOURCE_INPUT_NAME = "DS_PROMETHEUS"
DATASOURCE_INPUT: Json = {
    "name": DATASOURCE_INPUT_NAME,
    "label": "Prometheus",
    "description": "The Prometheus that scrapes the marginwatch daemons",
    "type": "datasource",
    "pluginId": "prometheus",
    "pluginName": "Prometheus",
}
GRID_WIDTH = 24
SCHEMA_VERSION = 39
TAG = "marginwatch"
RATE_INTERVAL = "$__rate_interval"

STATUS_COLORS = {"ok": "green", "warning": "yellow", "margin_call": "orange", "liquidation": "red"}
BANDS = metrics.LIQUIDATION_BANDS
PARTITION = 'partition=~"$partition"'
SYMBOL = 'symbol=~"$symbol"'
# Every series selector: the scrape jobs and instances chosen (all by default).
JOB = 'job=~"$job"'
SCOPE = f'{JOB}, instance=~"$instance"'
# Any series every daemon exports (the variables job and instance list its labels).
EVERY_DAEMON = metrics.REDIS_ERRORS


def series(metric: str, *matchers: str) -> str:
    """``metric{matchers..., job=~"$job", instance=~"$instance"}`` (empty matchers dropped)."""
    return f"{metric}{{{', '.join([*filter(None, matchers), SCOPE])}}}"


# The scrape jobs of deploy/prometheus/prometheus.yml name the workers, producer and executor.
WORKER_UP = series("up", 'job="marginwatch-worker"')
SERVICES_UP = series("up", 'job=~"marginwatch-producer|marginwatch-executor"')
RATIO_BUCKETS = f"sum by (le) ({series(metrics.CROSS_MARGIN_RATIO + '_bucket')})"


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
    expr = f"sum{grouping}(rate({series(metric, selector)}[{RATE_INTERVAL}]))"
    return f"{expr} * {scale}" if scale else expr


def quantiles(metric: str, by: str, selector: str, legend: str) -> list[Query]:
    """p50 and p99 of histogram ``metric`` per ``by``, from the rate of its buckets."""
    buckets = rate_by(f"{metric}_bucket", f"le, {by}", selector)
    return [
        q(f"histogram_quantile({p}, {buckets})", f"p{round(p * 100)} {legend}") for p in (0.5, 0.99)
    ]


def pools_in(margin_mode: str) -> list[Query]:
    """One instant query per status, in status order, 0 when no pool has it."""
    mode = f'margin_mode="{margin_mode}"'
    selectors = {
        status: series(metrics.POOLS, mode, f'status="{status}"') for status in STATUS_COLORS
    }
    return [now(f"sum({selector}) or vector(0)", status) for status, selector in selectors.items()]


def liquidation_map(bands: Sequence[str], by: str = "") -> str:
    """Notional within ``bands`` of adverse move over the selected symbols, summed ``by``."""
    grouping = f" by ({by}) " if by else ""
    within = f'band=~"{"|".join(bands)}"'
    return f"sum{grouping}({series(metrics.LIQUIDATION_MAP, SYMBOL, within)})"


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


def right_axis(name: str, unit: str) -> Json:
    """An override drawing the series named ``name`` against a right-hand axis in ``unit``."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "unit", "value": unit},
            {"id": "custom.axisPlacement", "value": "right"},
        ],
    }


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


def datasource_variable() -> Json:
    """The Prometheus datasource every query uses: the import form's choice, else the first."""
    return {
        "type": "datasource",
        "name": DATASOURCE_VARIABLE,
        "label": "Prometheus",
        "query": "prometheus",
        "current": {
            "selected": False,
            "text": "Prometheus",
            "value": f"${{{DATASOURCE_INPUT_NAME}}}",
        },
        "regex": "",
        "refresh": 1,
        "multi": False,
        "includeAll": False,
        "options": [],
        "hide": 0,
    }


def scope_variables() -> list[Json]:
    """``job`` and ``instance`` (of the jobs chosen): which daemons every query reads."""
    return [variable("job", EVERY_DAEMON, scoped=False),
            variable("instance", f"{EVERY_DAEMON}{{{JOB}}}", scoped=False)]  # fmt: skip


def variable(name: str, metric: str, *, scoped: bool = True) -> Json:
    """A multi-value variable over the values of label ``name`` of ``metric`` (All: ``.*``),
    of the jobs and instances chosen unless not ``scoped``."""
    query = f"label_values({series(metric) if scoped else metric}, {name})"
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
            "includeVars": True,
            "keepTime": True,
            "targetBlank": False,
        }
    ]
    return {
        "__inputs": [DATASOURCE_INPUT],
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
        "templating": {"list": [datasource_variable(), *scope_variables(), *variables]},
        "panels": grid.numbered(),
    }

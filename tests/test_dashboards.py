"""The Grafana dashboards: generated, stable, importable into any Grafana (a datasource variable,
the import input ``DS_PROMETHEUS``, every selector narrowed to the ``job`` and ``instance``
variables), their PromQL valid and answered by series shaped like marginwatch's (``promtool``),
and every metric they or the alert rules name defined in marginwatch/base/metrics.py or
marginwatch/base/stress_metrics.py."""

from __future__ import annotations

import importlib
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
METRICS_MODULES = tuple(ROOT / "marginwatch" / "base" / name
                        for name in ("metrics.py", "stress_metrics.py"))  # fmt: skip
RULES = ROOT / "deploy" / "prometheus" / "rules" / "marginwatch.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The variables every dashboard starts with: the datasource, then the scrape job and instance.
SCOPE_VARIABLES = ["datasource", "job", "instance"]
SCOPE_MATCHERS = ('job=~"$job"', 'instance=~"$instance"')
UIDS = {
    "marginwatch-risk.json": "marginwatch-risk",
    "marginwatch-pipeline.json": "marginwatch-pipeline",
}
GRID_WIDTH = 24

# The metrics marginwatch exports (docs/metrics.md lists them): name, type, labels. The dashboards
# show every one of them.
DOCUMENTED_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "marginwatch_ticks_accepted_total": ("counter", ()),
    "marginwatch_ticks_rejected_total": ("counter", ("reason",)),
    "marginwatch_producer_last_tick_timestamp_seconds": ("gauge", ()),
    "marginwatch_redis_errors_total": ("counter", ("component",)),
    "marginwatch_tick_age_seconds": ("histogram", ("partition",)),
    "marginwatch_evaluation_duration_seconds": ("histogram", ("partition",)),
    "marginwatch_evaluations_total": ("counter", ("partition",)),
    "marginwatch_positions_evaluated_total": ("counter", ("partition",)),
    "marginwatch_pools": ("gauge", ("partition", "status", "margin_mode")),
    "marginwatch_cross_margin_ratio": ("gaugehistogram", ("partition",)),
    "marginwatch_partition_pending_evaluations": ("gauge", ("partition",)),
    "marginwatch_partition_last_evaluated_tick_sequence": ("gauge", ("partition",)),
    "marginwatch_stale_symbols": ("gauge", ("partition",)),
    "marginwatch_liquidation_map_notional_usdt": ("gauge", ("symbol", "band")),
    "marginwatch_actions_sent_total": ("counter", ("action",)),
    "marginwatch_margin_calls_total": ("counter", ("margin_mode",)),
    "marginwatch_margin_call_resolutions_total": ("counter", ("margin_mode",)),
    "marginwatch_liquidations_total": ("counter", ("margin_mode",)),
    "marginwatch_liquidations_skipped_total": ("counter", ("reason",)),
    "marginwatch_liquidated_notional_usdt_total": ("counter", ("symbol",)),
    "marginwatch_tick_to_action_latency_seconds": ("histogram", ("action",)),
    "marginwatch_insurance_fund_usdt": ("gauge", ("partition",)),
    "marginwatch_bad_records_total": ("counter", ("component", "kind")),
    "marginwatch_oldest_due_liquidation_age_seconds": ("gauge", ("partition",)),
    "marginwatch_action_failures_total": ("counter", ("action",)),
    "marginwatch_action_retries_total": ("counter", ("action",)),
    "marginwatch_webhook_deliveries_total": ("counter", ("result",)),
    "marginwatch_account_events_total": ("counter", ("outcome",)),
    "marginwatch_book_reloads_total": ("counter", ("reason",)),
    "marginwatch_queue_messages": ("gauge", ("queue_kind", "partition")),
    "marginwatch_oldest_webhook_delivery_age_seconds": ("gauge", ("partition",)),
    "marginwatch_liquidations_due": ("gauge", ("partition",)),
    "marginwatch_liquidation_capacity_per_second": ("gauge", ()),
    "marginwatch_stress_deficit_usdt": ("gauge", ("scenario", "partition")),
    "marginwatch_stress_pools_liquidated": ("gauge", ("scenario", "partition")),
    "marginwatch_stress_pools_uncertain": ("gauge", ("scenario", "partition")),
    "marginwatch_stress_liquidated_notional_usdt": ("gauge", ("scenario", "symbol", "partition")),
    "marginwatch_stress_computed_timestamp_seconds": ("gauge", ("partition",)),
    "marginwatch_stress_duration_seconds": ("histogram", ("partition",)),
}
SERIES_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}
# Suffixes the client library adds to a family's name in the exposition.
EXPOSITION_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count", "_gsum", "_gcount")
JOBS = ("marginwatch-producer", "marginwatch-worker", "marginwatch-executor")
LABEL_VALUES = {
    "reason": ("jump", "rescued"),
    "component": ("producer", "worker", "executor"),
    "partition": ("0", "1"),
    "status": ("ok", "warning", "margin_call", "liquidation"),
    "margin_mode": ("cross", "isolated"),
    "symbol": ("BTCUSDT", "ETHUSDT"),
    "band": ("0-1%", "1-2%", "2-5%", "5-10%", "10-20%"),
    "action": ("margin_call", "margin_call_resolved", "liquidate"),
    "result": ("delivered", "failed", "retried"),
    "outcome": ("accepted", "rejected", "duplicate"),
    "kind": ("tick", "account", "action"),
    "queue_kind": ("evaluations", "margin_calls", "liquidations"),
    "scenario": ("BTCUSDT:-20%", "*:-30%"),
}
# Grafana's variables, replaced as Grafana would for "All" and a 5-minute rate interval.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$partition": ".*",
    "$symbol": ".*",
}
METRIC_NAME = re.compile(r"\b(marginwatch_[a-z0-9_]+)\b")
# A series selector: a metric name (or ``up``) and its matchers, if any.
SELECTOR = re.compile(r"\b(marginwatch_[a-z0-9_]+|up)\b(?:\{([^}]*)\})?")
# ``label_values(metric{matchers}, label)``, a Prometheus variable's query.
LABEL_VALUES_QUERY = re.compile(r"label_values\((\w+)(?:\{([^}]*)\})?, (\w+)\)")
# The scrape labels of every marginwatch series in the synthetic data.
SCRAPED_AS = 'job="marginwatch-worker", instance="worker-a:9100"'
METRIC_LITERAL = re.compile(r"""["'](marginwatch_[a-z0-9_]+)["']""")


def generator() -> ModuleType:
    """The dashboards' generator (``dashboards.generate``)."""
    return importlib.import_module("dashboards.generate")


@cache
def dashboards() -> dict[str, Any]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def query_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    return [variable["definition"] for variable in query_variables(dashboard)]


def label_values_series(match: re.Match[str]) -> str:
    """The series a ``label_values(metric{matchers}, label)`` query lists the values of."""
    metric, matchers, label = match.groups()
    wanted = [matchers, f'{label}!=""']
    return f"{metric}{{{', '.join(filter(None, wanted))}}}"


def every_query() -> list[str]:
    return [expr for dashboard in dashboards().values() for expr in queries(dashboard)]


def rule_expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def substituted(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``node``."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def documented_series() -> set[str]:
    """The series names the documented metrics are exposed as."""
    return {
        name + suffix
        for name, (kind, _labels) in DOCUMENTED_METRICS.items()
        for suffix in SERIES_SUFFIXES[kind]
    }


@cache
def defined_metrics() -> frozenset[str]:
    """Every series name the metrics modules can expose, from the names written in them."""
    texts = [module.read_text(encoding="utf-8") for module in METRICS_MODULES]
    families = {name for text in texts for name in METRIC_LITERAL.findall(text)}
    exposed = set(families)
    for family in families:
        base = family.removesuffix("_total")
        exposed.update(base + suffix for suffix in EXPOSITION_SUFFIXES)
    return frozenset(exposed)


def test_generator_writes_the_committed_dashboards() -> None:
    """dashboards/*.json are what ``python -m dashboards.generate`` writes, and nothing else."""
    rendered = generator().render()
    assert rendered == generator().render(), "the generator is not deterministic"
    assert set(rendered) == set(dashboards()), "a dashboard JSON without generator, or missing"
    for name, text in rendered.items():
        committed = (DASHBOARDS / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is out of date: run python -m dashboards.generate"


def test_uids_are_stable_and_unique() -> None:
    """Each file has its own fixed uid, title and the marginwatch tag."""
    assert {name: board["uid"] for name, board in dashboards().items()} == UIDS
    titles = [board["title"] for board in dashboards().values()]
    assert len(set(titles)) == len(titles)
    assert all("marginwatch" in board["tags"] for board in dashboards().values())


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_datasource_is_the_datasource_variable(name: str) -> None:
    """Each panel, target and query variable names the datasource ``${datasource}``, no other."""
    board = dashboards()[name]
    found = [node["datasource"] for node in walk(board) if "datasource" in node]
    assert found, "no datasource at all"
    assert all(datasource == DATASOURCE for datasource in found)
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target.get("datasource") == DATASOURCE for target in panel["targets"])
    assert all(variable["datasource"] == DATASOURCE for variable in query_variables(board))


@pytest.mark.parametrize("name", sorted(UIDS))
def test_the_datasource_is_a_prometheus_chosen_on_import(name: str) -> None:
    """A ``datasource`` variable over Prometheus datasources whose value is the import input
    ``DS_PROMETHEUS`` (Grafana's import form asks for it); provisioned as it is, Grafana takes
    the datasource named Prometheus, else the first."""
    board = dashboards()[name]
    (needed,) = board["__inputs"]
    assert needed["name"] == "DS_PROMETHEUS"
    assert (needed["type"], needed["pluginId"]) == ("datasource", "prometheus")
    variable = board["templating"]["list"][0]
    assert (variable["type"], variable["name"], variable["query"]) == (
        "datasource", "datasource", "prometheus"
    )  # fmt: skip
    assert variable["current"] == {"selected": False, "text": "Prometheus",
                                   "value": "${DS_PROMETHEUS}"}  # fmt: skip
    assert (variable["multi"], variable["includeAll"]) == (False, False)


@pytest.mark.parametrize("name", sorted(UIDS))
def test_job_and_instance_variables_list_the_daemons_scraped(name: str) -> None:
    """``job``, then ``instance`` of the jobs chosen, follow the datasource: multi-value, All by
    default, from a series every daemon exports."""
    board = dashboards()[name]
    assert [variable["name"] for variable in board["templating"]["list"]][:3] == SCOPE_VARIABLES
    job, instance = board["templating"]["list"][1:3]
    assert job["query"] == "label_values(marginwatch_redis_errors_total, job)"
    assert (
        instance["query"] == 'label_values(marginwatch_redis_errors_total{job=~"$job"}, instance)'
    )
    for variable in (job, instance):
        assert variable["type"] == "query"
        assert variable["definition"] == variable["query"]
        assert (variable["multi"], variable["includeAll"], variable["allValue"]) == (
            True,
            True,
            ".*",
        )
        assert variable["current"]["value"] == ["$__all"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_selector_is_narrowed_to_the_job_and_instance(name: str) -> None:
    """Every series a panel or another variable reads carries ``job=~"$job"`` and
    ``instance=~"$instance"``."""
    board = dashboards()[name]
    sources = queries(board)
    sources += [v["query"] for v in query_variables(board) if v["name"] not in SCOPE_VARIABLES]
    selectors = [match.groups() for source in sources for match in SELECTOR.finditer(source)]
    assert selectors, "no selector at all"
    for metric, matchers in selectors:
        for matcher in SCOPE_MATCHERS:
            assert matcher in (matchers or ""), f"{metric}{{{matchers}}} lacks {matcher}"


@pytest.mark.parametrize("name", sorted(UIDS))
def test_panels_have_unique_ids_and_tile_the_grid(name: str) -> None:
    """Panel ids are unique; panels fit 24 columns and do not overlap; each has a title."""
    board = dashboards()[name]
    ids = [panel["id"] for panel in panels(board)]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        assert panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        covered = set(
            itertools.product(
                range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
            )
        )
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered


def test_every_metric_in_dashboards_and_rules_is_defined() -> None:
    """Each marginwatch_* name in a panel, a variable or an alert rule exists in metrics.py."""
    sources = [*every_query(), *rule_expressions()]
    sources += [query for board in dashboards().values() for query in variable_queries(board)]
    used = {name for source in sources for name in METRIC_NAME.findall(source)}
    assert used, "no metric found"
    assert sorted(used - defined_metrics()) == []


def test_every_documented_metric_is_defined() -> None:
    """The metrics modules define every documented metric, under its documented name."""
    assert sorted(documented_series() - defined_metrics()) == []


def test_dashboards_show_every_documented_metric_and_no_other() -> None:
    """Each documented metric (and ``up``) appears in some panel's query; nothing else does."""
    used = {name for expr in every_query() for name in METRIC_NAME.findall(expr)}
    assert sorted(used - documented_series()) == []
    missing = [
        name
        for name, (kind, _labels) in DOCUMENTED_METRICS.items()
        if not any(name + suffix in used for suffix in SERIES_SUFFIXES[kind])
    ]
    assert missing == []
    for job in JOBS:
        assert any(re.search(rf'\bup\{{job=~?"[^"]*{job}', expr) for expr in every_query()), job


def test_every_panel_is_documented() -> None:
    """docs/operations.md describes every panel by its title."""
    text = OPERATIONS.read_text(encoding="utf-8")
    titles = {panel["title"] for board in dashboards().values() for panel in panels(board)}
    assert sorted(title for title in titles if title not in text) == []


def synthetic_series() -> list[dict[str, str]]:
    """Series shaped like marginwatch's exposition: every metric, every label combination."""
    series = [
        {"series": f'up{{job="{job}", instance="{job}:9100"}}', "values": "1x40"} for job in JOBS
    ]
    for name, (kind, labels) in DOCUMENTED_METRICS.items():
        for values in itertools.product(*(LABEL_VALUES[label] for label in labels)):
            matchers = [f'{label}="{value}"' for label, value in zip(labels, values, strict=True)]
            series += _family_series(name, kind, [*matchers, SCRAPED_AS])
    return series


def _family_series(name: str, kind: str, matchers: list[str]) -> list[dict[str, str]]:
    def one(suffix: str, values: str, *extra: str) -> dict[str, str]:
        return {"series": f"{name}{suffix}{{{', '.join([*matchers, *extra])}}}", "values": values}

    if kind == "counter":
        return [one("", "0+10x40")]
    if kind == "gauge":
        return [one("", "0+60x40" if name.endswith("_timestamp_seconds") else "5x40")]
    if kind == "histogram":  # counters, cumulative over buckets
        buckets = {"0.5": "0+1x40", "1": "0+2x40", "+Inf": "0+3x40"}
        totals = [one("_sum", "0+1x40"), one("_count", "0+3x40")]
    else:  # a gauge histogram: the current distribution
        buckets = {"0.5": "1x40", "1": "2x40", "+Inf": "3x40"}
        totals = [one("_gsum", "2x40"), one("_gcount", "3x40")]
    return [*(one("_bucket", values, f'le="{le}"') for le, values in buckets.items()), *totals]


def panel_exprs(title: str) -> list[str]:
    """The queries of the panel titled ``title``, Grafana's variables substituted."""
    (panel,) = [p for board in dashboards().values() for p in panels(board) if p["title"] == title]
    return [substituted(target["expr"]) for target in panel["targets"]]


def promtool_test(tmp_path: Path, tests: dict[str, Any]) -> None:
    """Run ``promtool test rules`` on ``tests`` (with no rule file of its own)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install it (apt-get install -y prometheus)")
    path = tmp_path / "panel_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], **tests}), encoding="utf-8")
    command = [promtool, "test", "rules", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_time_to_drain_is_the_due_backlog_over_every_executors_capacity(tmp_path: Path) -> None:
    """Two executors measure 20 and 30 liquidations/s; partitions 0 and 1 hold 30 and 10 due,
    each exported by both workers of a pair: capacity 50/s, backlog 40, drained in 0.8 s."""
    capacity = "marginwatch_liquidation_capacity_per_second"
    due = "marginwatch_liquidations_due"
    series = [
        {"series": f'{capacity}{{job="marginwatch-executor", instance="{name}"}}', "values": v}
        for name, v in (("executor-a:9100", "20x10"), ("executor-b:9100", "30x10"))
    ] + [
        {"series": f'{due}{{job="marginwatch-worker", instance="{name}", partition="{p}"}}',
         "values": v}
        for name in ("worker-a:9100", "worker-b:9100") for p, v in (("0", "30x10"), ("1", "10x10"))
    ]  # fmt: skip
    exprs = panel_exprs("Liquidation capacity and due backlog")
    exprs += panel_exprs("Time to drain the due liquidations")
    expected = dict(zip(exprs, (50, 40, 0.8), strict=True))
    checks = [{"expr": expr, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": value}]}
              for expr, value in expected.items()]  # fmt: skip
    tests = [{"interval": "1m", "input_series": series, "promql_expr_test": checks}]
    promtool_test(tmp_path, {"evaluation_interval": "1m", "tests": tests})


def test_every_query_is_valid_promql_with_data(tmp_path: Path) -> None:
    """promtool parses every panel query and finds series for it in marginwatch-shaped data."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install it (apt-get install -y prometheus)")
    exprs = sorted({substituted(expr) for expr in every_query()})
    exprs += sorted(
        {
            substituted(LABEL_VALUES_QUERY.sub(label_values_series, query))
            for board in dashboards().values()
            for query in variable_queries(board)
        }
    )
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query{n}", "expr": expr} for n, expr in enumerate(exprs)
                ],
            }
        ]
    }
    tests = {
        "rule_files": ["dashboards.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": synthetic_series(),
                "promql_expr_test": [
                    {
                        "expr": f"count({expr}) > bool 0",
                        "eval_time": "30m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for expr in exprs
                ],
            }
        ],
    }
    (tmp_path / "dashboards.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    (tmp_path / "dashboards_test.yml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    for command in (
        [promtool, "check", "rules", str(tmp_path / "dashboards.yml")],
        [promtool, "test", "rules", str(tmp_path / "dashboards_test.yml")],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

"""A real Prometheus scrapes the live pipeline through a market crash: every PromQL expression of
the dashboards and of the alert rules finds data, and the margin-call alert fires and resolves.

The pipeline is the real one (``python -m marginwatch`` subprocesses on a private redis-server):
a synthetic producer, two partition workers and the executor, each serving ``/metrics`` on its
own free port. Prometheus (Debian's package, as ``.ci/run`` installs it) scrapes them every
second under the job names of ``deploy/prometheus/prometheus.yml`` and evaluates the rules of
``deploy/prometheus/rules/marginwatch.yml`` every second.

The scenario:

* 2,000 generated accounts (``generate_accounts``) opened at the synthetic market's start
  prices: the crash sends about 320 margin calls (most of those pools are then liquidated),
  three times the surge alert's threshold;
* BTCUSDT and ETHUSDT fall 12% over 10 s, ``CRASH_AT_SECONDS`` after the producer starts, and
  stay down; the market walks on;
* one bad print of XRPUSDT (+50% for one tick, held by nobody) is refused by the jump guard,
  so ``marginwatch_ticks_rejected_total`` has data;
* margin calls go to two webhook URLs of a local receiver, one accepting and one failing, so
  webhook deliveries are delivered, retried and failed;
* account events: a deposit (accepted), the same again (duplicate), one for an unknown account
  (rejected).
* the workers compute two stress scenarios every 5 s per partition (the figures themselves are
  checked on a book written out by hand in ``test_stress_prometheus.py``).

Alert rules: thresholds and expressions are loaded verbatim, with two exceptions that only
shorten time: every ``for:`` becomes ``FOR_DURATION`` so a test run can see alerts fire and
resolve, and MarginwatchMarginCallSurge's range ``[5m]`` becomes ``SURGE_WINDOW``: with a
five-minute window the alert cannot resolve until five minutes after the last margin call. Its
threshold (more than 100) is kept, so the shortened rule is the stricter one: more than 100
margin calls within 30 s are more than 100 within 5 minutes. The alert must become active
after the crash started, fire, and resolve once the margin calls stop while every daemon runs.
(Prometheus starts before the daemons, so with 5 s ``for:`` the down and stale alerts may fire
for a moment at start-up; no test looks at them.)

Data: every dashboard target is queried as Grafana would (instant targets at now, range targets
over the run), with ``$__rate_interval`` = 1m, ``$__range`` = the dashboard's default range and
every multi-value variable at "All"; a variable's ``label_values`` query must find values too.
An alert expression is a condition, empty while the alert does not fire: for each rule the
whole expression is evaluated (it must be accepted), and each operand of its comparisons
(``absent(x)`` taken as ``x``, number literals left out) must return data. Data means at least
one sample with a finite value.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from marginwatch.base import keys
from marginwatch.cli.book_generator import generate_accounts
from marginwatch.cli.embedded_redis import RedisServer, free_port
from marginwatch.client import publish_account_event
from marginwatch.producer.synthetic import MAJOR_START_PRICES
from marginwatch.state import streams
from marginwatch.state.accounts import store_accounts
from marginwatch.state.fund import credit_ledger
from tests.polling import wait_for
from tests.prometheus_server import PrometheusServer, start_prometheus

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "marginwatch.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

PARTITIONS = 4
ACCOUNTS = 2_000
BOOK_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
BAD_PRINT_SYMBOL = "XRPUSDT"
FUND_START = Decimal(1_000_000)
CRASH_AT_SECONDS = 12
CRASH_SECONDS = 10
SCENARIOS = (
    f"BTCUSDT:-12%:{CRASH_SECONDS}s@{CRASH_AT_SECONDS}s",
    f"ETHUSDT:-12%:{CRASH_SECONDS}s@{CRASH_AT_SECONDS}s",
    f"{BAD_PRINT_SYMBOL}:+50%:1ms@4s",  # one tick at +50% (the symbol ticks once a second)...
    f"{BAD_PRINT_SYMBOL}:-33.3333%:1ms@5s",  # ...then back: a bad print the jump guard refuses
)
MAX_JUMP_RATIO = "0.2"  # the crash moves about 1.3% a tick
# The workers' stress scenarios, computed often enough for the duration panel's rate.
STRESS_SCENARIOS = ["BTCUSDT:-20%", "*:-30%"]
STRESS_INTERVAL_SECONDS = "5"

# Daemon name: (its Prometheus job, its command after ``python -m marginwatch``).
PRODUCER_ARGS = [
    "producer", "--source", "synthetic", "--symbols", ",".join([*BOOK_SYMBOLS, BAD_PRINT_SYMBOL]),
    "--max-jump-ratio", MAX_JUMP_RATIO,
    *(arg for scenario in SCENARIOS for arg in ("--scenario", scenario)),
]  # fmt: skip
DAEMONS: dict[str, tuple[str, list[str]]] = {
    "executor": ("marginwatch-executor", ["executor", "--loglevel", "WARNING"]),
    "worker-a": ("marginwatch-worker", ["worker", "--partitions", "0-1", "--loglevel", "WARNING"]),
    "worker-b": ("marginwatch-worker", ["worker", "--partitions", "2-3", "--loglevel", "WARNING"]),
    "producer": ("marginwatch-producer", PRODUCER_ARGS),
}
JOBS = ("marginwatch-producer", "marginwatch-worker", "marginwatch-executor")

SCRAPE_INTERVAL = "1s"
FOR_SECONDS = 5
FOR_DURATION = f"{FOR_SECONDS}s"
SURGE_ALERT = "MarginwatchMarginCallSurge"
SURGE_WINDOW = ("[5m]", "[30s]")
RATE_INTERVAL = "1m"  # Grafana's $__rate_interval: at least four scrape intervals

START_TIMEOUT = 120.0  # workers compile their numba kernels on a cold cache
FIRING_TIMEOUT = 90.0  # from the start of the crash
RESOLVED_TIMEOUT = 90.0  # from the alert firing
DATA_TIMEOUT = 45.0  # from the crash being seen, shared by every data check
POLL_SECONDS = 0.5


# Rules and dashboards ---------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules_for_the_test(rules: dict[str, Any]) -> dict[str, Any]:
    """The rule file with every ``for:`` shortened and the surge alert's window shortened."""
    shortened = copy.deepcopy(rules)
    for group in shortened["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR_DURATION
            if rule.get("alert") == SURGE_ALERT:
                assert SURGE_WINDOW[0] in rule["expr"], f"{SURGE_ALERT} has no {SURGE_WINDOW[0]}"
                rule["expr"] = rule["expr"].replace(*SURGE_WINDOW)
    return shortened


def alert_rules() -> list[dict[str, Any]]:
    """The alert rules of the deployed file, verbatim."""
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def surge_threshold() -> float:
    """The number of margin calls the surge alert needs to exceed."""
    rule = next(rule for rule in alert_rules() if rule.get("alert") == SURGE_ALERT)
    found = re.search(r">\s*(\d+(?:\.\d+)?)\s*$", rule["expr"])
    assert found, f"{SURGE_ALERT}: no threshold in {rule['expr']!r}"
    return float(found[1])


# ``label_values(metric{matchers}, label)``, a Prometheus variable's query.
LABEL_VALUES = r"label_values\((\w+)(?:\{([^}]*)\})?,\s*(\w+)\)"


@dataclass(frozen=True)
class PanelQuery:
    """One dashboard target (or variable query), Grafana's variables substituted."""

    where: str
    expr: str
    instant: bool


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def grafana_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """What Grafana puts for each variable: built-ins, and "All" for every query variable."""
    time_from = dashboard["time"]["from"]
    assert time_from.startswith("now-"), time_from
    values = {"__rate_interval": RATE_INTERVAL, "__interval": SCRAPE_INTERVAL}
    values["__range"] = time_from.removeprefix("now-")
    for variable in query_variables(dashboard):
        assert variable.get("includeAll"), f"variable {variable['name']} has no All"
        values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def query_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The variables that query Prometheus (not the datasource variable)."""
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def substituted(expr: str, values: dict[str, str]) -> str:
    """``expr`` with ``$name``, ``${name}`` and ``[[name]]`` replaced."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"unknown Grafana variable {name} in {expr!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def dashboard_queries() -> list[PanelQuery]:
    """Every target of every dashboard, and every variable's ``label_values`` query."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        values = grafana_values(board)
        for panel in panels(board):
            for target in panel.get("targets", []):
                where = f"{board['uid']} / {panel['title']} / {target['refId']}"
                instant = bool(target.get("instant")) and not target.get("range")
                found.append(PanelQuery(where, substituted(target["expr"], values), instant))
        for variable in query_variables(board):
            label_values = re.fullmatch(LABEL_VALUES, variable["query"])
            assert label_values, f"{board['uid']}: variable {variable['name']}: unknown query"
            metric, matchers, label = label_values.groups()
            selector = ", ".join(filter(None, [matchers, f'{label}!=""']))
            where = f"{board['uid']} / variable {variable['name']}"
            found.append(PanelQuery(where, substituted(f"{metric}{{{selector}}}", values), True))
    return found


def top_level(expr: str) -> list[bool]:
    """Per character: whether it is outside any brackets and string."""
    mask, depth, quote = [], 0, ""
    for index, char in enumerate(expr):
        if quote:
            if char == quote and expr[index - 1] != "\\":
                quote = ""
            mask.append(False)
            continue
        if char in "\"'`":
            quote = char
        depth += (char in "([{") - (char in ")]}")
        mask.append(depth == 0 and char not in "\"'`)]}")
    return mask


SET_OPERATOR = re.compile(r"\b(?:or|and|unless)\b(?:\s*(?:on|ignoring)\s*\([^)]*\))?")
COMPARISON = re.compile(
    r"(?:==|!=|>=|<=|>|<)(?:\s*bool\b)?(?:\s*(?:on|ignoring)\s*\([^)]*\))?"
    r"(?:\s*group_(?:left|right)\b(?:\s*\([^)]*\))?)?"
)
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?", re.IGNORECASE)


def split_top_level(expr: str, operator: re.Pattern[str]) -> list[str]:
    """``expr`` split at each top-level ``operator`` (its modifiers dropped)."""
    mask = top_level(expr)
    parts, start = [], 0
    for match in operator.finditer(expr):
        if match.start() >= start and mask[match.start()]:
            parts.append(expr[start : match.start()])
            start = match.end()
    return [*parts, expr[start:]]


def operands(expr: str) -> list[str]:
    """The operands of the comparisons of an alert expression (see the module docstring)."""
    found: list[str] = []
    for branch in split_top_level(expr, SET_OPERATOR):
        for operand in split_top_level(branch, COMPARISON):
            text = " ".join(operand.split())
            absent = re.fullmatch(r"absent\((.*)\)", text)
            text = absent[1] if absent else text
            if not NUMBER.fullmatch(text) and text not in found:
                found.append(text)
    return found


def rule_id(rule: dict[str, Any]) -> str:
    return f"{rule.get('alert', rule.get('record'))}-{rule.get('labels', {}).get('severity')}"


# The pipeline -----------------------------------------------------------------------------------


class WebhookReceiver(ThreadingHTTPServer):
    """Margin-call webhooks: ``/ok`` accepts every delivery, ``/fail`` answers 503."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), WebhookHandler)
        self.delivered = 0
        self.refused = 0
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        accepted = self.path == "/ok"
        with self.server.lock:
            if accepted:
                self.server.delivered += 1
            else:
                self.server.refused += 1
        self.send_response(200 if accepted else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@dataclass
class Pipeline:
    """The running deployment, its Prometheus, and what the tests wait for (once each)."""

    client: redis.Redis
    prometheus: PrometheusServer
    receiver: WebhookReceiver
    directory: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_at: float = 0.0  # Unix seconds: Prometheus up, nothing scraped yet
    crash_not_before: float = 0.0  # Unix seconds: the crash starts later than this
    fired: dict[str, Any] | None = None
    data_deadline: float = 0.0  # monotonic

    def check_running(self) -> None:
        """Fail at once, with its log, if a daemon exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.directory / f"{name}.log").read_text(errors="replace")
                pytest.fail(f"{name} exited with status {process.returncode}:\n{log[-3000:]}")

    def wait_for(
        self, condition: Callable[[], Any], what: str | Callable[[], str], timeout: float
    ) -> Any:
        def checked() -> Any:
            self.check_running()
            return condition()

        return wait_for(checked, what, timeout)

    def margin_calls(self) -> int:
        """MARGIN_CALL events written to Redis."""
        entries = streams.read_all(self.client, keys.margin_call_events, PARTITIONS)
        return sum(1 for _id, fields in entries if fields.get("kind") == "margin_call")

    def surge_alerts(self) -> list[dict[str, Any]]:
        return [a for a in self.prometheus.alerts() if a["labels"]["alertname"] == SURGE_ALERT]

    def wait_until_firing(self) -> dict[str, Any]:
        """The surge alert, once Prometheus fires it."""
        if self.fired is None:

            def firing() -> dict[str, Any] | None:
                return next((a for a in self.surge_alerts() if a["state"] == "firing"), None)

            def what() -> str:
                calls, threshold = self.margin_calls(), surge_threshold()
                return f"{SURGE_ALERT} firing ({calls} margin calls; the rule needs > {threshold})"

            remaining = self.crash_not_before - time.time() + FIRING_TIMEOUT
            self.fired = self.wait_for(firing, what, remaining)
            self.data_deadline = time.monotonic() + DATA_TIMEOUT
        return self.fired


def start_daemon(
    pipeline: Pipeline, name: str, env: dict[str, str], port: int
) -> subprocess.Popen[bytes]:
    _job, args = DAEMONS[name]
    with (pipeline.directory / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "marginwatch", *args],
            env={**env, "MARGINWATCH_METRICS_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    pipeline.processes[name] = process
    return process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def prometheus_config(ports: dict[str, int], rule_file: Path) -> dict[str, Any]:
    """Scrape every daemon under the deployment's job names, every second."""
    deployed = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert set(JOBS) <= deployed, f"deploy/prometheus/prometheus.yml lacks {set(JOBS) - deployed}"
    targets: dict[str, list[str]] = {job: [] for job in JOBS}
    for name, (job, _args) in DAEMONS.items():
        targets[job].append(f"127.0.0.1:{ports[name]}")
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(rule_file)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets[job]}]} for job in JOBS
        ],
    }


def account_events() -> list[dict[str, str]]:
    """A deposit, the same deposit again (a duplicate), a deposit for no account (rejected)."""
    deposit = {"type": "deposit", "account_id": "acct-0000000", "amount": "100", "event_id": "d1"}
    unknown = {**deposit, "account_id": "no-such-account", "event_id": "d2"}
    return [deposit, deposit, unknown]


@pytest.fixture(scope="module")
def pipeline(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """Prometheus scraping the producer, two workers and the executor through the crash."""
    directory = tmp_path_factory.mktemp("prometheus-integration")
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()  # the session's server: start from an empty database
    marks = {symbol: Decimal(str(MAJOR_START_PRICES[symbol])) for symbol in BOOK_SYMBOLS}
    store_accounts(client, generate_accounts(ACCOUNTS, marks, seed=1), PARTITIONS)
    credit_ledger(client, 0, FUND_START)
    with ExitStack() as stack:
        stack.callback(client.close)
        receiver = WebhookReceiver()
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        stack.callback(receiver.server_close)
        stack.callback(receiver.shutdown)
        ports = {name: free_port() for name in DAEMONS}
        rule_file = directory / "rules" / "marginwatch.yml"
        rule_file.parent.mkdir()
        rule_file.write_text(yaml.safe_dump(rules_for_the_test(load_yaml(RULES))), encoding="utf-8")
        prometheus = start_prometheus(prometheus_config(ports, rule_file), directory / "prometheus")
        stack.callback(prometheus.stop)
        running = Pipeline(client, prometheus, receiver, directory, started_at=time.time())
        env = {
            **os.environ,
            "MARGINWATCH_REDIS_URL": redis_server.url,
            "MARGINWATCH_PARTITIONS": str(PARTITIONS),
            "MARGINWATCH_WEBHOOK_URLS": json.dumps([receiver.url("/ok"), receiver.url("/fail")]),
            "MARGINWATCH_WEBHOOK_SECRET": "integration-test",
            "MARGINWATCH_WEBHOOK_MAX_ATTEMPTS": "2",
            "MARGINWATCH_STRESS_SCENARIOS": json.dumps(STRESS_SCENARIOS),
            "MARGINWATCH_STRESS_INTERVAL_SECONDS": STRESS_INTERVAL_SECONDS,
        }
        for name in ("executor", "worker-a", "worker-b"):
            stack.callback(stop_process, start_daemon(running, name, env, ports[name]))
        running.wait_for(
            lambda: all(client.mget([keys.partition_evaluated(p) for p in range(PARTITIONS)])),
            "the first evaluation of every partition",
            START_TIMEOUT,
        )
        for event in account_events():
            publish_account_event(client, event, PARTITIONS)
        running.crash_not_before = time.time() + CRASH_AT_SECONDS
        # Stopped first at teardown (callbacks run last in, first out): no ticks after it.
        stack.callback(stop_process, start_daemon(running, "producer", env, ports["producer"]))
        yield running


# The tests ----------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_daemon(pipeline: Pipeline) -> None:
    """up == 1 for the producer, both workers and the executor, under the deployment's jobs."""
    expected = {"marginwatch-producer": 1, "marginwatch-worker": 2, "marginwatch-executor": 1}

    def up_by_job() -> tuple[dict[str, int], dict[str, int]]:
        """Per job: series with up == 1, and targets whose health is up."""
        series = pipeline.prometheus.query("up")["result"]
        up = [s["metric"]["job"] for s in series if s["value"][1] == "1"]
        targets = pipeline.prometheus.active_targets()
        healthy = [t["labels"]["job"] for t in targets if t["health"] == "up"]
        return {job: up.count(job) for job in JOBS}, {job: healthy.count(job) for job in JOBS}

    pipeline.wait_for(
        lambda: up_by_job() == (expected, expected),
        lambda: f"every target up, {expected}; (up, target health): {up_by_job()}",
        START_TIMEOUT,
    )


def test_every_rule_is_loaded_and_evaluates(pipeline: Pipeline) -> None:
    """Prometheus evaluates every deployed rule without error, as the module docstring says."""

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in pipeline.prometheus.rule_groups() for r in g["rules"]]
        return rules if all(r["health"] == "ok" for r in rules) else None

    rules = pipeline.wait_for(evaluated, "every rule evaluated with health ok", 30)
    loaded = sorted((r["name"], "".join(r["query"].split()), r["duration"]) for r in rules)
    expected = [
        (rule["alert"], "".join(rule["expr"].split()), FOR_SECONDS)
        for group in rules_for_the_test(load_yaml(RULES))["groups"]
        for rule in group["rules"]
    ]
    assert loaded == sorted(expected)


def test_margin_call_alert_fires_during_the_crash(pipeline: Pipeline) -> None:
    """MarginwatchMarginCallSurge fires once the crash has sent more than its threshold."""
    alert = pipeline.wait_until_firing()
    active_at = datetime.fromisoformat(alert["activeAt"]).timestamp()
    assert active_at >= pipeline.crash_not_before, "the alert was active before the crash"
    assert pipeline.margin_calls() > surge_threshold()


def test_prometheus_sees_every_kind_of_event(pipeline: Pipeline) -> None:
    """The scraped counters hold the bad print, the account events and the webhook results."""
    pipeline.wait_until_firing()

    def by_label(metric: str, label: str) -> dict[str, float]:
        """The non-zero totals of ``metric`` by ``label``."""
        series = pipeline.prometheus.query(f"sum by ({label}) ({metric}) > 0")["result"]
        return {s["metric"][label]: float(s["value"][1]) for s in series}

    def seen() -> dict[str, Any]:
        with pipeline.receiver.lock:
            received = {"ok": pipeline.receiver.delivered, "fail": pipeline.receiver.refused}
        return {
            "margin calls": pipeline.margin_calls(),
            "receiver": received,
            "webhooks": by_label("marginwatch_webhook_deliveries_total", "result"),
            "rejected ticks": by_label("marginwatch_ticks_rejected_total", "reason"),
            "account events": by_label("marginwatch_account_events_total", "outcome"),
        }

    def expected(calls: int) -> dict[str, Any]:
        """Each margin call delivered to /ok, and refused twice by /fail (one retry, failed)."""
        return {
            "margin calls": calls,
            "receiver": {"ok": calls, "fail": 2 * calls},
            "webhooks": {"delivered": calls, "retried": calls, "failed": calls},
            "rejected ticks": {"jump": 1},
            "account events": {"accepted": 1, "duplicate": 1, "rejected": 1},
        }

    def settled() -> bool:
        now = seen()
        return now == expected(now["margin calls"])

    pipeline.wait_for(
        settled,
        lambda: f"every event scraped: {expected(pipeline.margin_calls())}; seen {seen()}",
        60,
    )


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda query: query.where)
def test_dashboard_query_has_data(pipeline: Pipeline, query: PanelQuery) -> None:
    """The panel's query (instant at now, or over the run) returns a finite sample."""
    pipeline.wait_until_firing()

    def result() -> dict[str, Any]:
        if query.instant:
            return pipeline.prometheus.query(query.expr)
        return pipeline.prometheus.query_range(query.expr, pipeline.started_at, time.time(), 1)

    assert_data(pipeline, query.where, query.expr, result)


@pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
def test_alert_rule_expression_has_data(pipeline: Pipeline, rule: dict[str, Any]) -> None:
    """The rule's expression is accepted and each operand of its conditions returns data."""
    pipeline.wait_until_firing()
    pipeline.prometheus.query(rule["expr"])
    found = operands(rule["expr"])
    assert found, f"no operand found in {rule['expr']!r}"
    for operand in found:
        where = f"{rule_id(rule)}: operand {operand!r} of {' '.join(rule['expr'].split())!r}"
        assert_data(pipeline, where, operand, lambda o=operand: pipeline.prometheus.query(o))


def test_margin_call_alert_resolves_after_the_crash(pipeline: Pipeline) -> None:
    """Once the margin calls stop, MarginwatchMarginCallSurge is no longer pending or firing."""
    pipeline.wait_until_firing()

    def resolved() -> bool:
        """Neither pending nor firing, while the margin-call counter is still scraped."""
        # The increase fell because the margin calls stopped, not because the series went away.
        total = pipeline.prometheus.query("sum(marginwatch_margin_calls_total)")["result"]
        scraped = bool(total) and float(total[0]["value"][1]) > surge_threshold()
        return scraped and not pipeline.surge_alerts()

    pipeline.wait_for(
        resolved, lambda: f"{SURGE_ALERT} resolved: {pipeline.surge_alerts()}", RESOLVED_TIMEOUT
    )


def finite_samples(data: dict[str, Any]) -> list[float]:
    """The finite values of a query result (vector, matrix or scalar)."""
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        raw = [result[1]]
    elif kind == "vector":
        raw = [series["value"][1] for series in result]
    else:
        raw = [value for series in result for _t, value in series["values"]]
    return [float(value) for value in raw if math.isfinite(float(value))]


def assert_data(
    pipeline: Pipeline, where: str, expr: str, run: Callable[[], dict[str, Any]]
) -> None:
    """Poll ``run`` until it returns a finite sample (the deadline is shared by every check)."""
    remaining = max(pipeline.data_deadline - time.monotonic(), 2 * POLL_SECONDS)
    last: dict[str, Any] = {}

    def sampled() -> bool:
        last.update(run())
        return bool(finite_samples(last))

    wait_for(
        sampled,
        lambda: f"{where}: data for {expr!r}: {last.get('resultType')} {last.get('result')}",
        remaining,
        POLL_SECONDS,
    )

"""A real Prometheus scrapes the stress metrics of real partition workers: the figures of a book
written out by hand, summed per scenario with each partition once, and the alert of the
scenario that would exhaust the fund.

Processes: a private redis-server (the session's), two partition workers both serving
partitions 0-1 (a fail-over pair: each partition's figures exported twice), the executor (it
exports the insurance fund) and Prometheus (Debian's package) scraping them every second and
evaluating the deployed rules, with every ``for:`` shortened (``rules_for_the_test``).

The book, in two partitions, at marks BTCUSDT 50,000 and ETHUSDT 2,500, published before the
workers start (their first evaluation computes the scenarios; no tick comes after):

* bob (partition 0): cross long 1 BTCUSDT from 50,000, wallet 5,000;
* alice (partition 1): cross long 10 ETHUSDT from 2,500, wallet 2,000.

``BTCUSDT:-20%``: bob at 40,000 has a balance of −5,000: a deficit of 5,000, 40,000 of BTCUSDT
notional; alice is unmoved. ``BTCUSDT:-5%``: bob's balance is 2,500, far above his maintenance
margin (190): nothing. ``*:-30%``: bob's balance is −10,000 (35,000 of BTCUSDT), alice's
10 × (1,750 − 2,500) + 2,000 = −5,500 (17,500 of ETHUSDT, exported as ``other``): deficit
15,500. The fund is 10,000: ``*:-30%`` exhausts it, ``BTCUSDT:-20%`` does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from marginwatch.base import keys
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, free_port
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.producer.publisher import Publisher
from marginwatch.state.accounts import store_accounts
from marginwatch.state.fund import credit_ledger
from tests.polling import wait_for
from tests.prometheus_server import PrometheusServer, start_prometheus
from tests.test_prometheus_integration import RULES, load_yaml, rules_for_the_test, stop_process

D = Decimal
CROSS = MarginMode.CROSS
PARTITIONS = 2
BOOK = [
    Account("bob", D(5_000), (Position("BTCUSDT", D(1), D(50_000), 20, CROSS),)),
    Account("alice", D(2_000), (Position("ETHUSDT", D(10), D(2_500), 20, CROSS),)),
]
FUND = D(10_000)
SCENARIOS = ["BTCUSDT:-20%", "BTCUSDT:-5%", "*:-30%"]
ALERT = "MarginwatchStressScenarioExhaustsFund"
INTERVAL_SECONDS = 3_600  # longer than the test: each worker computes a partition once
DAEMONS = {  # name: (job, arguments after ``python -m marginwatch``)
    "worker-a": ("marginwatch-worker", ["worker", "--partitions", "0-1", "--loglevel", "WARNING"]),
    "worker-b": ("marginwatch-worker", ["worker", "--partitions", "0-1", "--loglevel", "WARNING"]),
    "executor": ("marginwatch-executor", ["executor", "--loglevel", "WARNING"]),
}
START_TIMEOUT = 120.0  # numba compiles the kernels on a cold cache
TIMEOUT = 60.0
PER_SCENARIO = "sum by ({by}) (max by ({by}, partition) ({metric}))"


@dataclass
class Scraped:
    prometheus: PrometheusServer
    started_at: float
    processes: dict[str, subprocess.Popen[bytes]]
    directory: Path

    def vector(self, expr: str) -> dict[tuple[str, ...], float]:
        """An instant query's samples by their label values (in label-name order)."""
        found = self.prometheus.query(expr)["result"]
        return {tuple(v for _k, v in sorted(s["metric"].items())): float(s["value"][1])
                for s in found}  # fmt: skip

    def wait_for_vector(
        self, expr: str, expected: dict[tuple[str, ...], float]
    ) -> dict[tuple[str, ...], float]:
        last: dict[tuple[str, ...], float] = {}

        def matches() -> bool:
            self.check_running()
            last.clear()
            last.update(self.vector(expr))
            return last == expected

        wait_for(matches, lambda: f"{expr} == {expected}; got {last}", TIMEOUT, 0.5)
        return last

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.directory / f"{name}.log").read_text(errors="replace")
                pytest.fail(f"{name} exited with status {process.returncode}:\n{log[-3000:]}")


def scrape_config(ports: dict[str, int], rule_file: Path) -> dict[str, Any]:
    jobs: dict[str, list[str]] = {}
    for name, (job, _args) in DAEMONS.items():
        jobs.setdefault(job, []).append(f"127.0.0.1:{ports[name]}")
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rule_file)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                           for job, targets in jobs.items()],
    }  # fmt: skip


def start_daemon(directory: Path, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (directory / f"{name}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "marginwatch", *DAEMONS[name][1]], env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.fixture(scope="module")
def scraped(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scraped]:
    directory = tmp_path_factory.mktemp("stress-prometheus")
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    store_accounts(client, BOOK, PARTITIONS)
    credit_ledger(client, 0, FUND)
    now_ms = time.time_ns() // 1_000_000
    Publisher(client).publish([Tick("BTCUSDT", D(50_000), now_ms),
                               Tick("ETHUSDT", D(2_500), now_ms)])  # fmt: skip
    with ExitStack() as stack:
        stack.callback(client.close)
        ports = {name: free_port() for name in DAEMONS}
        rule_file = directory / "marginwatch.yml"
        rule_file.write_text(yaml.safe_dump(rules_for_the_test(load_yaml(RULES))), "utf-8")
        prometheus = start_prometheus(scrape_config(ports, rule_file), directory / "prometheus")
        stack.callback(prometheus.stop)
        env = {**os.environ, "MARGINWATCH_REDIS_URL": redis_server.url,
               "MARGINWATCH_PARTITIONS": str(PARTITIONS),
               "MARGINWATCH_STRESS_SCENARIOS": json.dumps(SCENARIOS),
               "MARGINWATCH_STRESS_INTERVAL_SECONDS": str(INTERVAL_SECONDS)}  # fmt: skip
        running = Scraped(prometheus, time.time(), {}, directory)
        for name in DAEMONS:
            process = start_daemon(directory, name, env | {"MARGINWATCH_METRICS_PORT": str(
                ports[name])})  # fmt: skip
            running.processes[name] = process
            stack.callback(stop_process, process)
        stored = [keys.partition_stress(p) for p in range(PARTITIONS)]
        wait_for(lambda: running.check_running() or client.exists(*stored) == PARTITIONS,
                 "every partition's stress figures stored", START_TIMEOUT)  # fmt: skip
        yield running


def per_scenario(metric: str, by: str = "scenario") -> str:
    return PER_SCENARIO.format(by=by, metric=metric)


def test_the_deficit_of_each_scenario_over_the_partitions(scraped: Scraped) -> None:
    """Summed per scenario, each partition once: 5,000, 0 and 15,500 USDT."""
    expected = {("BTCUSDT:-20%",): 5_000.0, ("BTCUSDT:-5%",): 0.0, ("*:-30%",): 15_500.0}
    scraped.wait_for_vector(per_scenario("marginwatch_stress_deficit_usdt"), expected)


def test_each_partition_exports_its_own_figures_from_both_workers(scraped: Scraped) -> None:
    """Partition 0 holds bob's deficit, partition 1 alice's; each partition is exported by
    both workers of the pair, the same figure twice: 3 scenarios x 2 partitions x 2 workers."""
    expected = {("0", "*:-30%"): 10_000.0, ("1", "*:-30%"): 5_500.0}
    deficit = 'marginwatch_stress_deficit_usdt{scenario="*:-30%"}'
    scraped.wait_for_vector(f"max by (scenario, partition) ({deficit})", expected)
    scraped.wait_for_vector(f"min by (scenario, partition) ({deficit})", expected)
    scraped.wait_for_vector("count(marginwatch_stress_deficit_usdt)", {(): 12.0})


def test_pools_liquidated_and_their_notional_by_named_symbol(scraped: Scraped) -> None:
    """1, 0 and 2 pools; BTCUSDT's notional apart (named by a scenario), ETHUSDT's as other."""
    pools = {("BTCUSDT:-20%",): 1.0, ("BTCUSDT:-5%",): 0.0, ("*:-30%",): 2.0}
    scraped.wait_for_vector(per_scenario("marginwatch_stress_pools_liquidated"), pools)
    notional = per_scenario("marginwatch_stress_liquidated_notional_usdt", "scenario, symbol")
    expected = {
        ("BTCUSDT:-20%", "BTCUSDT"): 40_000.0, ("BTCUSDT:-20%", "other"): 0.0,
        ("BTCUSDT:-5%", "BTCUSDT"): 0.0, ("BTCUSDT:-5%", "other"): 0.0,
        ("*:-30%", "BTCUSDT"): 35_000.0, ("*:-30%", "other"): 17_500.0,
    }  # fmt: skip
    scraped.wait_for_vector(notional, expected)
    scraped.wait_for_vector(per_scenario("marginwatch_stress_pools_uncertain"),
                            dict.fromkeys(pools, 0.0))  # fmt: skip


def test_when_and_how_long_each_partition_was_computed(scraped: Scraped) -> None:
    """Each partition's figures carry the time of the marks they are at (after the test
    started) and one timed computation per worker that evaluated it (the interval is longer than
    the test: at most one each)."""
    timestamp = "max by (partition) (marginwatch_stress_computed_timestamp_seconds)"
    fresh = f"count({timestamp} >= {scraped.started_at:.3f} <= time())"
    scraped.wait_for_vector(fresh, {(): float(PARTITIONS)})
    counts = "sum by (partition) (marginwatch_stress_duration_seconds_count)"

    def timed() -> bool:
        found = scraped.vector(counts)
        return set(found) == {("0",), ("1",)} and all(1 <= n <= 2 for n in found.values())

    wait_for(timed, lambda: f"1 or 2 computations per partition: {scraped.vector(counts)}",
             TIMEOUT, 0.5)  # fmt: skip


def test_the_alert_fires_for_the_scenario_that_exhausts_the_fund_only(scraped: Scraped) -> None:
    """``*:-30%`` (15,500 >= 10,000) fires; ``BTCUSDT:-20%`` (5,000) and ``BTCUSDT:-5%`` do not."""

    def firing() -> list[dict[str, Any]]:
        scraped.check_running()
        alerts = scraped.prometheus.alerts()
        return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]

    fired = wait_for(firing, f"{ALERT} firing", TIMEOUT, 0.5)
    assert [a["labels"]["scenario"] for a in fired] == ["*:-30%"]
    assert float(fired[0]["value"]) == 15_500.0
    active = [a for a in scraped.prometheus.alerts() if a["labels"]["alertname"] == ALERT]
    assert [a["labels"]["scenario"] for a in active] == ["*:-30%"]

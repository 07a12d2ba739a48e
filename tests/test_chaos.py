"""The short chaos run in ``make check``: real daemons, faults at every named crash point and
at random, a Redis restart, a tick storm and malformed inputs; nothing lost or doubled."""

from __future__ import annotations

from pathlib import Path

from benchmarks.chaos.__main__ import print_report
from benchmarks.chaos.scenario import ChaosConfig, run_chaos
from marginwatch.base.crash import POINTS


def test_the_short_chaos_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """Every check of the run holds, and every fault it plans was injected."""
    config = ChaosConfig(tmp_path, per_cohort=12, partitions=2, random_kills=1)
    report = run_chaos(config)
    print_report(config, report)
    assert report.problems == []
    assert {f"crash point {point}" for point in POINTS} <= set(report.faults)
    assert report.faults["Redis kill -9 and restart"] == 1
    assert sum(count for fault, count in report.faults.items() if "kill -9" in fault) >= 5
    assert sum(report.malformed.values()) >= 10_000
    assert report.expected["liquidation"] == 4 * 12

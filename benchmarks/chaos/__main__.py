"""``python -m benchmarks.chaos``: the long chaos run, its figures and a verdict."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.chaos.scenario import ChaosConfig, ChaosReport, run_chaos


def parse(argv: list[str]) -> ChaosConfig:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--per-cohort", type=int, default=500, help="accounts per cohort (7)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--random-kills", type=int, default=3, help="extra kills per level")
    parser.add_argument("--invalid-events", type=int, default=6_000)
    parser.add_argument("--bad-ticks", type=int, default=6_000)
    parser.add_argument("--bad-snapshots", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--directory", type=Path, help="logs and Redis data (default: a temp dir)")
    args = parser.parse_args(argv)
    directory = args.directory or Path(tempfile.mkdtemp(prefix="marginwatch-chaos-"))
    return ChaosConfig(directory, args.per_cohort, args.partitions, args.invalid_events,
                       args.bad_ticks, args.bad_snapshots, random_kills=args.random_kills,
                       seed=args.seed)  # fmt: skip


def print_report(config: ChaosConfig, report: ChaosReport) -> None:
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average at the end {load[0]:.2f} / "
          f"{load[1]:.2f} / {load[2]:.2f}; logs in {config.directory}")  # fmt: skip
    print(f"book: {report.accounts:,} accounts, {config.partitions} partitions; "
          f"run took {report.seconds:.1f} s")  # fmt: skip
    print("faults injected:")
    for fault, count in sorted(report.faults.items()):
        print(f"  {count:5d}  {fault}")
    print(f"malformed inputs: {sum(v for k, v in report.malformed.items() if 'dead' not in k):,}")
    for kind, count in sorted(report.malformed.items()):
        print(f"  {count:7,d}  {kind}")
    print("actions        expected     seen     lost  duplicated")
    for kind in ("margin_call", "resolved", "liquidation"):
        print(f"  {kind:<12} {report.expected[kind]:8,d} {report.seen[kind]:8,d} "
              f"{report.lost[kind]:8,d} {report.duplicated[kind]:11,d}")  # fmt: skip
    sent, allowed = report.optional_margin_calls
    print(
        f"  margin calls in the liquidation's own evaluation: {sent} of {allowed} sent "
        "(the others overtaken by their liquidation)"
    )
    for what, (count, seconds) in report.redelivery.items():
        print(f"redelivery after {what}: {count} actions taken and not executed at the kill; "
              f"the last executed {seconds:.2f} s after it")  # fmt: skip
    for what, seconds in report.recovery_seconds.items():
        print(f"after {what}: every action of the level done {seconds:.2f} s after the kill")
    print(f"webhooks: {report.webhooks}")
    print("verdict: " + ("PASS" if not report.problems else "FAIL"))
    for problem in report.problems:
        print(f"  {problem}")


def main(argv: list[str] | None = None) -> int:
    config = parse(sys.argv[1:] if argv is None else argv)
    report = run_chaos(config)
    print_report(config, report)
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())

"""Stress benchmark: ``marginwatch stress`` over a large live book in a private Redis.

    python -m benchmarks.bench_stress [--accounts 1000000] [--partitions 8] [--seed 7]
        [--grid=-30%:30%:5%] [--impact '*:1%/10000000'] [--fund 1000000]

Writes the accounts as JSON Lines (``benchmarks.bench_load``: three positions each on the
shipped bracket tables' symbols, a quarter isolated), loads them with the real ``marginwatch
accounts load`` into a private redis-server, publishes a mark per symbol at the accounts' entry
prices and credits the fund, then runs the real command as a child: the grid once without and
once with ``--impact``. Prints, per run, the command's own read and scenario times, its wall
time and peak RSS, the worst scenario's deficit and rounds, and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from benchmarks.bench_load import entry_prices, run_load, write_accounts
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer, start_redis_server
from marginwatch.engine.brackets import default_tables
from marginwatch.producer.publisher import Publisher
from marginwatch.state.fund import credit_ledger

STRESS_TIMEOUT_SECONDS = 1800
EVENT_MS = 1_730_376_000_000  # 2024-10-31T12:00:00Z


def publish_marks(client: redis.Redis, seed: int) -> int:
    """A tick per symbol at the prices ``write_accounts`` opened its positions at."""
    prices = entry_prices(default_tables(), random.Random(seed))
    ticks = [Tick(symbol, price, EVENT_MS) for symbol, price in prices.items()]
    Publisher(client).publish(ticks)
    return len(ticks)


def run_stress(server: RedisServer, partitions: int, options: list[str]) -> dict[str, Any]:
    """The real ``marginwatch stress OPTIONS --json`` as a child: its document, with its wall
    seconds and peak RSS added."""
    env = {**os.environ, "MARGINWATCH_REDIS_URL": server.url,
           "MARGINWATCH_PARTITIONS": str(partitions)}  # fmt: skip
    command = [sys.executable, "-m", "marginwatch", "stress", *options, "--json"]
    started = time.perf_counter()
    ran = subprocess.run(command, env=env, capture_output=True, text=True,
                         timeout=STRESS_TIMEOUT_SECONDS, check=False)  # fmt: skip
    if ran.returncode != 0:
        raise SystemExit(f"stress exited {ran.returncode}: {ran.stderr.strip()}")
    document: dict[str, Any] = json.loads(ran.stdout)
    document["wall_seconds"] = time.perf_counter() - started
    document["peak_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return document


def report(label: str, document: dict[str, Any]) -> None:
    """One run's figures."""
    worst = max(document["scenarios"], key=lambda s: Decimal(s["deficit"]))
    rounds = len(worst.get("rounds", [])) or 1
    print(f"{label}: read {document['read_seconds']} s, {len(document['scenarios'])} scenarios "
          f"{document['scenario_seconds']} s, wall {document['wall_seconds']:.1f} s, "
          f"peak RSS {document['peak_rss'] / 2**30:.2f} GiB; worst {worst['name']}: "
          f"{worst['pools_liquidated']:,} pools, deficit {Decimal(worst['deficit']):,.0f} USDT, "
          f"{rounds} rounds")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--grid", default="-30%:30%:5%")
    parser.add_argument("--impact", default="*:1%/10000000")
    parser.add_argument("--fund", default="1000000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="marginwatch-bench-stress-") as directory:
        path = Path(directory) / "accounts.jsonl"
        started = time.perf_counter()
        with path.open("w", encoding="utf-8") as out:
            write_accounts(out, args.accounts, args.seed)
        print(f"wrote {args.accounts:,} accounts in {time.perf_counter() - started:.1f} s")
        server = start_redis_server()
        try:
            measure(server, path, args)
        finally:
            server.stop()
    print(f"load average (1, 5, 15 min): {os.getloadavg()}, cores: {os.cpu_count()}")


def measure(server: RedisServer, path: Path, args: argparse.Namespace) -> None:
    """Load the book, publish the marks, credit the fund, run the grid without and with
    ``--impact``."""
    seconds, _output = run_load(server, path, args.partitions)
    print(f"loaded into {args.partitions} partitions in {seconds:.1f} s")
    client = redis.Redis.from_url(server.url)
    print(f"published {publish_marks(client, args.seed)} marks")
    credit_ledger(client, 0, Decimal(args.fund))
    grid = [f"--grid={args.grid}"]
    report(f"grid {args.grid}", run_stress(server, args.partitions, grid))
    impact = [*grid, "--impact", args.impact]
    report(f"grid {args.grid} --impact {args.impact}", run_stress(server, args.partitions, impact))


if __name__ == "__main__":
    main()

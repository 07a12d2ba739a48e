"""Load benchmark: ``marginwatch accounts load`` of a JSON Lines file into a private Redis.

    python benchmarks/bench_load.py [--accounts 200000] [--partitions 8] [--seed 7]

Writes the accounts to a JSON Lines file one line at a time (never all of them in memory):
three positions each on symbols of the shipped bracket tables, about a quarter of them
isolated, numbers as decimal strings. Starts its own redis-server on a free port with the
persistence of a deployment (``appendonly yes``, ``appendfsync everysec``), runs the real
command as a child process, checks that every account and change-stream entry is there, and
prints accounts per second (without the command's start-up, timed on an empty file, and end to
end), the command's peak RSS (its largest process) and the machine's load.
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
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import redis

from marginwatch.base import keys
from marginwatch.cli.embedded_redis import RedisServer, start_redis_server
from marginwatch.engine.brackets import BracketTable, default_tables

POSITIONS_PER_ACCOUNT = 3
ISOLATED_SHARE = 0.25
LEVERAGES = (2, 3, 5, 10, 20)
PERSISTENCE = ("--appendonly", "yes", "--appendfsync", "everysec")
LOAD_TIMEOUT_SECONDS = 600


def entry_prices(tables: Mapping[str, BracketTable], rng: random.Random) -> dict[str, Decimal]:
    """A price per symbol, log-uniform from 0.01 to 60,000, to four significant digits."""
    return {symbol: Decimal(f"{10 ** rng.uniform(-2, 4.78):.4g}") for symbol in sorted(tables)}


def position(symbol: str, price: Decimal, table: BracketTable, rng: random.Random) -> Any:
    """One position of a few thousand USDT, long or short, within the first tier's leverage."""
    leverage = min(rng.choice(LEVERAGES), table.brackets[0].max_leverage)
    quantity = max(Decimal(round(rng.lognormvariate(7.5, 1.2), 2)) / price, Decimal("0.001"))
    sign = rng.choice((1, -1))
    entry: dict[str, Any] = {"symbol": symbol, "quantity": f"{sign * quantity:.3f}",
                             "entry_price": str(price), "leverage": leverage}  # fmt: skip
    if rng.random() < ISOLATED_SHARE:
        margin = abs(quantity) * price / leverage * Decimal("1.2")
        entry |= {"margin_mode": "isolated", "isolated_wallet": f"{margin:.2f}"}
    else:
        entry["margin_mode"] = "cross"
    return entry


def write_accounts(out: TextIO, count: int, seed: int) -> None:
    """``count`` account lines, each written as soon as it is drawn."""
    rng = random.Random(seed)
    tables = default_tables()
    prices = entry_prices(tables, rng)
    symbols = sorted(tables)
    for number in range(count):
        chosen = rng.sample(symbols, POSITIONS_PER_ACCOUNT)
        positions = [position(s, prices[s], tables[s], rng) for s in chosen]
        wallet = f"{rng.uniform(500, 50_000):.2f}"
        account = {"account_id": f"acct-{number:08d}", "cross_wallet_balance": wallet,
                   "positions": positions}  # fmt: skip
        out.write(json.dumps(account, separators=(",", ":")) + "\n")


@dataclass
class Figures:
    """What one load measured."""

    accounts: int
    file_bytes: int
    wall_seconds: float
    startup_seconds: float
    peak_rss_bytes: int
    redis_used_bytes: int
    output: str


def stored_counts(client: redis.Redis, partitions: int) -> tuple[int, int]:
    """(members, change-stream entries) over every partition."""
    members = sum(int(client.scard(keys.partition_members(p))) for p in range(partitions))
    changes = sum(int(client.xlen(keys.partition_changes(p))) for p in range(partitions))
    return members, changes


def run_load(server: RedisServer, path: Path, partitions: int) -> tuple[float, str]:
    """The real ``marginwatch accounts load PATH`` as a child: (wall seconds, its stdout)."""
    env = {**os.environ, "MARGINWATCH_REDIS_URL": server.url,
           "MARGINWATCH_PARTITIONS": str(partitions)}  # fmt: skip
    command = [sys.executable, "-m", "marginwatch", "accounts", "load", str(path)]
    started = time.perf_counter()
    ran = subprocess.run(command, env=env, capture_output=True, text=True,
                         timeout=LOAD_TIMEOUT_SECONDS, check=False)  # fmt: skip
    seconds = time.perf_counter() - started
    if ran.returncode != 0:
        raise SystemExit(f"accounts load exited {ran.returncode}: {ran.stderr.strip()}")
    return seconds, ran.stdout.strip()


def measure(path: Path, accounts: int, partitions: int) -> Figures:
    """Time the command on an empty file (its start-up), then load ``path`` into a fresh
    persistent Redis and check it; the figures."""
    server = start_redis_server(extra_args=PERSISTENCE)
    try:
        empty = path.with_name("empty.jsonl")
        empty.write_text("", encoding="utf-8")
        startup, _ = run_load(server, empty, partitions)
        seconds, output = run_load(server, path, partitions)
        client = redis.Redis.from_url(server.url)
        members, changes = stored_counts(client, partitions)
        if members != accounts or changes != accounts:
            raise SystemExit(f"stored {members} accounts and {changes} changes of {accounts}")
        used: Any = client.info("memory")
        return Figures(accounts, path.stat().st_size, seconds, startup,
                       resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                       int(used["used_memory"]), output)  # fmt: skip
    finally:
        server.stop()


def report(figures: Figures, generate_seconds: float) -> None:
    """Print the figures and the machine's load."""
    n = figures.accounts
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average at the end {load[0]:.2f} / "
          f"{load[1]:.2f} / {load[2]:.2f}")  # fmt: skip
    print(f"file: {n:,} accounts, {POSITIONS_PER_ACCOUNT} positions each, "
          f"{figures.file_bytes / 2**20:.1f} MiB, written in {generate_seconds:.1f} s")  # fmt: skip
    print(f"accounts load: {figures.output}")
    loading = figures.wall_seconds - figures.startup_seconds
    print(f"stored: {n / loading:,.0f} accounts/s ({loading:.2f} s after the command's start-up "
          f"of {figures.startup_seconds:.2f} s); {n / figures.wall_seconds:,.0f} accounts/s end "
          f"to end ({figures.wall_seconds:.2f} s)")  # fmt: skip
    print(f"memory: the command's peak RSS {figures.peak_rss_bytes / 2**20:.0f} MiB; Redis "
          f"{figures.redis_used_bytes / n:.0f} bytes per account")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="marginwatch-bench-load-") as directory:
        path = Path(directory) / "accounts.jsonl"
        started = time.perf_counter()
        with path.open("w", encoding="utf-8") as out:
            write_accounts(out, args.accounts, args.seed)
        generate_seconds = time.perf_counter() - started
        report(measure(path, args.accounts, args.partitions), generate_seconds)


if __name__ == "__main__":
    main()

"""Replay benchmark: ``marginwatch replay`` of a crash path over a generated book.

    python benchmarks/bench_replay.py [--accounts 1000000] [--ticks 1000] [--seed 1]

The book is the demo's (``cli.book_generator`` at the demo's marks on its six symbols;
``--accounts 2000 --seed 1`` is the book ``marginwatch demo --write-book`` writes), written as
a snapshot one account at a time. The
path is the demo's crash: BTCUSDT falls 12% over the first 60% of the ticks, then recovers half
of it; the other symbols move half as much. One tick a row, the symbols in turn, 50 ms apart
(each row is its own moment). The real command runs as a child process with ``--json``; the
benchmark prints what it measured (the read, the replay, ticks per second, the events), the
command's peak RSS and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from marginwatch.cli.book_generator import generate_accounts
from marginwatch.cli.demo import DEMO_MARKS
from marginwatch.state.accounts import account_to_json

CRASH_MOVE = Decimal("-0.12")  # the demo's crash: BTCUSDT:-12%
RECOVERED_SHARE = Decimal("0.5")  # of the fall, by the last tick
FALL_SHARE = 0.6  # of the ticks spent falling
OTHERS_BETA = Decimal("0.5")
TICK_INTERVAL_MS = 50
START_MS = 1_730_376_000_000  # 2024-10-31T12:00:00Z
PRICE_PLACES = Decimal("0.0001")
REPLAY_TIMEOUT_SECONDS = 3_600


def write_snapshot(out: TextIO, accounts: int, seed: int) -> None:
    """The demo's book as a snapshot, one account at a time."""
    marks = {symbol: str(mark) for symbol, mark in DEMO_MARKS.items()}
    out.write('{"mark_prices": ' + json.dumps(marks) + ', "accounts": [\n')
    for number, account in enumerate(generate_accounts(accounts, DEMO_MARKS, seed=seed)):
        out.write(("," if number else "") + account_to_json(account) + "\n")
    out.write("]}\n")


def crash_move(tick: int, ticks: int) -> Decimal:
    """BTCUSDT's move from its mark at ``tick``: down to −12%, then half of it back."""
    falling = max(1, int(ticks * FALL_SHARE))
    if tick < falling:
        return CRASH_MOVE * (tick + 1) / falling
    rising = max(1, ticks - falling)
    return CRASH_MOVE * (1 - RECOVERED_SHARE * (tick - falling + 1) / rising)


def write_path(out: TextIO, ticks: int) -> None:
    """``ticks`` rows, the symbols in turn."""
    symbols = sorted(DEMO_MARKS)
    out.write("symbol,event_time,mark_price\n")
    for tick in range(ticks):
        symbol = symbols[tick % len(symbols)]
        move = crash_move(tick, ticks) * (1 if symbol == "BTCUSDT" else OTHERS_BETA)
        price = (DEMO_MARKS[symbol] * (1 + move)).quantize(PRICE_PLACES)
        out.write(f"{symbol},{START_MS + tick * TICK_INTERVAL_MS},{price}\n")


def run_replay(snapshot: Path, path: Path) -> tuple[dict[str, Any], float]:
    """The real command's JSON document, and its wall time."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARGINWATCH_")}
    command = [sys.executable, "-m", "marginwatch", "replay", "--snapshot", str(snapshot),
               "--ticks", str(path), "--insurance-fund", "1000000", "--json"]  # fmt: skip
    started = time.perf_counter()
    ran = subprocess.run(command, env=env, capture_output=True, text=True,
                         timeout=REPLAY_TIMEOUT_SECONDS, check=False)  # fmt: skip
    seconds = time.perf_counter() - started
    if ran.returncode != 0:
        raise SystemExit(f"replay exited {ran.returncode}: {ran.stderr.strip()}")
    document: dict[str, Any] = json.loads(ran.stdout)
    return document, seconds


def report(document: dict[str, Any], wall_seconds: float, snapshot_bytes: int) -> None:
    """Print the figures and the machine's load."""
    totals = document["totals"]
    load = os.getloadavg()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"machine: {os.cpu_count()} cores; load average at the end {load[0]:.2f} / "
          f"{load[1]:.2f} / {load[2]:.2f}")  # fmt: skip
    size = f"snapshot {snapshot_bytes / 2**20:.1f} MiB"
    print(f"book: {document['accounts']:,} accounts, {document['pools']:,} pools, "
          f"{document['positions']:,} positions; {size}")  # fmt: skip
    print(f"path: {document['ticks']:,} ticks in {document['moments']:,} moments")
    print(f"read (snapshot, path, layout): {document['read_seconds']} s")
    print(f"replay: {document['replay_seconds']} s, {document['ticks_per_second']} ticks/s")
    print(f"events: {totals['margin_call']:,} margin calls, {totals['resolved']:,} resolutions, "
          f"{totals['liquidation']:,} liquidations, {totals['skipped']:,} skipped; fees "
          f"{totals['fees']}, deficits covered {totals['deficits_covered']}; fund "
          f"{document['insurance_fund_start']} -> {document['insurance_fund_end']}")  # fmt: skip
    print(f"the command: {wall_seconds:.1f} s end to end, peak RSS {peak / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="marginwatch-bench-replay-") as directory:
        snapshot, path = Path(directory) / "book.json", Path(directory) / "crash.csv"
        started = time.perf_counter()
        with snapshot.open("w", encoding="utf-8") as out:
            write_snapshot(out, args.accounts, args.seed)
        with path.open("w", encoding="utf-8") as out:
            write_path(out, args.ticks)
        print(f"wrote the snapshot and the path in {time.perf_counter() - started:.1f} s")
        document, seconds = run_replay(snapshot, path)
        report(document, seconds, snapshot.stat().st_size)


if __name__ == "__main__":
    main()

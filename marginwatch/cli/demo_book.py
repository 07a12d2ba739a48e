"""``marginwatch demo --write-book DIR``: the demo's book and crash as files, for the offline
commands (``evaluate``, ``stress --snapshot``, ``replay``).

* ``DIR/demo-book.json``: the demo's generated accounts (seed 1) at its start marks, in the
  snapshot contract, with the default bracket tables;
* ``DIR/demo-crash.csv``: the demo's crash without the random walk: BTCUSDT falling 12% over
  30 s from 20 s in, geometrically (the same return every second), a tick a second for
  ``CRASH_PATH_SECONDS``, in the replay format (``symbol,event_time,mark_price``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from marginwatch.cli.book_generator import generate_accounts
from marginwatch.cli.demo import CRASH, DEMO_MARKS
from marginwatch.producer.scenarios import parse_scenario
from marginwatch.producer.synthetic import to_significant_digits
from marginwatch.state.accounts import account_to_json

BOOK_FILE = "demo-book.json"
CRASH_FILE = "demo-crash.csv"
CRASH_PATH_SECONDS = 60
PATH_START_MS = 1_730_376_000_000  # 2024-10-31T12:00:00Z, the day of the default brackets
PRICE_DIGITS = 8  # significant digits of a crash mark, as the synthetic market writes them


def write_demo_book(directory: Path, accounts: int) -> tuple[Path, Path]:
    """Write both files into ``directory`` (created if missing); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    book, crash = directory / BOOK_FILE, directory / CRASH_FILE
    book.write_text(demo_snapshot(accounts), encoding="utf-8")
    with crash.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(crash_rows())
    return book, crash


def demo_snapshot(accounts: int) -> str:
    """The demo's book as a snapshot document."""
    generated = generate_accounts(accounts, DEMO_MARKS, seed=1)
    document = {
        "mark_prices": {symbol: str(mark) for symbol, mark in DEMO_MARKS.items()},
        "accounts": [json.loads(account_to_json(account)) for account in generated],
    }
    return json.dumps(document, indent=1) + "\n"


def crash_rows() -> list[list[str]]:
    """The header and a BTCUSDT tick a second along the demo's crash."""
    crash = parse_scenario(CRASH)
    start = float(DEMO_MARKS[crash.symbol])
    rows = [["symbol", "event_time", "mark_price"]]
    for second in range(CRASH_PATH_SECONDS + 1):
        mark = to_significant_digits(start * crash.multiplier(second), PRICE_DIGITS)
        rows.append([crash.symbol, str(PATH_START_MS + 1000 * second), f"{mark.normalize():f}"])
    return rows

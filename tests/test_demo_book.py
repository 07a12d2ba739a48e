"""``marginwatch demo --write-book DIR``: the demo's book as a snapshot and its crash as a tick
file, both readable by the offline commands."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from marginwatch.base.snapshot import parse_snapshot
from marginwatch.cli.main import main
from marginwatch.engine.brackets import default_tables
from marginwatch.producer.replay import csv_items
from marginwatch.producer.ticks import RawTick

D = Decimal


def test_the_demo_book_and_crash_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """50 accounts at the demo's marks; BTCUSDT at 67,000 until 20 s, then ×0.88^(k/30) for k
    seconds into the crash: 0.88 × 67,000 = 58,960 from 50 s on."""
    assert main(["demo", "--write-book", str(tmp_path / "out"), "--accounts", "50"]) == 0
    book, crash = tmp_path / "out" / "demo-book.json", tmp_path / "out" / "demo-crash.csv"
    assert capsys.readouterr().out == f"wrote {book}\nwrote {crash}\n"
    snapshot = parse_snapshot(book.read_text(encoding="utf-8"), default_tables())
    assert len(snapshot.accounts) == 50
    assert snapshot.mark_prices["BTCUSDT"] == D(67_000)
    with crash.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 61
    assert [D(rows[s]["mark_price"]) for s in (0, 20, 50, 60)] == [D(67_000)] * 2 + [D(58_960)] * 2
    assert D(rows[35]["mark_price"]) == D(str(round(67_000 * 0.88**0.5, 3)))
    ticks = [item for item in csv_items(crash) if isinstance(item, RawTick)]
    assert len(ticks) == 61

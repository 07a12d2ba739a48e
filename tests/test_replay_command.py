"""``marginwatch replay`` run as a user runs it: the timeline table, the JSON contract, moments
of ticks sharing an event time, and a clear line (never a traceback) for each bad input."""

from __future__ import annotations

import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.commands import SCRIPT, document, run_command
from tests.stress_book import write_snapshot

D = Decimal
HEADER = "symbol,event_time,mark_price"
KEYS = [
    "snapshot", "ticks_file", "accounts", "pools", "positions", "ticks", "moments",
    "read_seconds", "replay_seconds", "ticks_per_second", "insurance_fund_start",
    "insurance_fund_end", "insurance_fund_below_zero", "totals", "events",
]  # fmt: skip
# The tiny book of tests/stress_book.py (1% flat maintenance, default fee rate 1.25%): erin's
# cross pool is at liquidation at the snapshot's marks; at BTCUSDT 39,800 alice's cross pool,
# bob's and erin's isolated BTC longs and dave's cross long are too.


def replay(tmp_path: Path, rows: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``marginwatch replay`` of the tiny book along ``rows``, with default settings."""
    snapshot = write_snapshot(tmp_path / "book.json")
    ticks = tmp_path / "path.csv"
    ticks.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return run_command("replay", "--snapshot", str(snapshot), "--ticks", str(ticks), *args)


def test_the_json_contract(tmp_path: Path) -> None:
    """The keys in order; counts integers, money decimal strings. erin's cross ETH long is at
    liquidation at the snapshot's marks already (moment 0): 2 × (3,000 − 3,000) on 50 against
    MM 60; her whole 50 goes to the fee (1.25% × 6,000 = 75, capped), the fund from 100 to 150."""
    found = document(replay(tmp_path, ["BTCUSDT,1730376000000,50000"], "--insurance-fund", "100",
                            "--json"))  # fmt: skip
    assert list(found) == KEYS
    assert (found["accounts"], found["pools"], found["positions"]) == (5, 8, 7)
    assert (found["ticks"], found["moments"]) == (1, 1)
    erin = [event for event in found["events"] if event["account_id"] == "erin"]
    assert [(e["moment"], e["kind"], e["pool"]) for e in erin] == [
        (0, "margin_call", "cross"),
        (0, "liquidation", "cross"),
    ]
    assert erin[1]["event_time"] is None  # moment 0: the snapshot's marks
    assert (erin[1]["fee"], erin[1]["deficit_covered"], erin[1]["cross_wallet_after"]) == (
        "50", "0", "0",
    )  # fmt: skip
    assert erin[1]["positions"][0]["fee"] == "75"
    assert (found["insurance_fund_start"], found["insurance_fund_end"]) == ("100", "150")
    assert found["totals"]["fees"] == "50"


def test_ticks_sharing_an_event_time_are_one_moment(tmp_path: Path) -> None:
    """BTCUSDT at 39,800 then back at 50,000 within one event time: one moment at the later
    mark, so dave is never liquidated; a moment later at 39,800, he is (a margin call, then his
    liquidation: MB 2,050 − 2,040 = 10 < MM 79.6, the fee capped at those 10)."""
    rows = ["BTCUSDT,1730376001000,39800", "BTCUSDT,1730376001000,50000",
            "BTCUSDT,1730376002000,39800"]  # fmt: skip
    found = document(replay(tmp_path, rows, "--json"))
    assert found["moments"] == 2
    dave = [(e["moment"], e["kind"]) for e in found["events"] if e["account_id"] == "dave"]
    assert dave == [(2, "margin_call"), (2, "liquidation")]
    liquidation = next(e for e in found["events"] if e["account_id"] == "dave" and "fee" in e)
    assert (liquidation["fee"], liquidation["deficit_covered"]) == ("10", "0")


def test_the_table(tmp_path: Path) -> None:
    """The book and path, one line per event, the totals and both times."""
    result = replay(tmp_path, ["BTCUSDT,1730376002000,39800"], "--insurance-fund", "1000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("book: 5 accounts, 8 pools, 7 positions (")
    assert "path: 1 ticks in 1 moments" in lines[0]
    assert lines[2].split()[:3] == ["moment", "event", "time"]
    dave = [line.split() for line in lines if " dave " in line]
    assert [cells[:5] for cells in dave] == [
        ["1", "2024-10-31T12:00:02.000Z", "margin_call", "dave", "cross"],
        ["1", "2024-10-31T12:00:02.000Z", "liquidation", "dave", "cross"],
    ]
    assert lines[-2].startswith("margin calls 5, resolutions 0, liquidations 5 (skipped 0)")
    assert lines[-1].startswith("read the snapshot and the path in ")
    assert " replayed 1 ticks (1 moments) in " in lines[-1]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["BTCUSDT,1730376000000,-5"], "path.csv:2: mark_price: must be positive"),
        (["BTCUSDT,1730376000000,abc"], "path.csv:2: mark_price: not a number: 'abc'"),
        (["XRPUSDT,1730376000000,1"], "path.csv:2: symbol: 'XRPUSDT' is not a symbol of the "
                                      "snapshot"),
        (["BTCUSDT,1730376000000"], "path.csv:2: mark_price: missing"),
        (["BTCUSDT,17303760x,1"], "path.csv:2: event_time: must be a whole number of "
                                  "milliseconds, got '17303760x'"),
        (["BTCUSDT,2,1", "BTCUSDT,1,1"], "path.csv:3: event_time: 1 is before the row before "
                                         "(2)"),
        ([], "--ticks: "),
    ],
)  # fmt: skip
def test_a_bad_tick_row_is_one_line_naming_its_line_and_field(
    tmp_path: Path, rows: list[str], message: str
) -> None:
    result = replay(tmp_path, rows)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"marginwatch: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_a_bad_fund_and_a_missing_file_are_named(tmp_path: Path) -> None:
    bad_fund = replay(tmp_path, ["BTCUSDT,1,1"], "--insurance-fund", "lots")
    assert bad_fund.stderr == "marginwatch: --insurance-fund: 'lots': expected USDT, e.g. 250000\n"
    snapshot = write_snapshot(tmp_path / "book.json")
    missing = subprocess.run([SCRIPT, "replay", "--snapshot", str(snapshot), "--ticks",
                              str(tmp_path / "none.csv")], capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr == f"marginwatch: --ticks: {tmp_path / 'none.csv'}: no such file\n"


def test_the_documented_example() -> None:
    """docs/replay.md's example (its arithmetic is written out there): bob called, held in the
    hysteresis band, resolved, called again and liquidated in deficit; alice's isolated SOL
    long liquidated with its fee capped at what it held."""
    examples = Path(__file__).parent.parent / "examples"
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARGINWATCH_")}
    result = subprocess.run([SCRIPT, "replay", "--snapshot", str(examples / "snapshot.json"),
                             "--ticks", str(examples / "crash.csv"), "--insurance-fund", "5000",
                             "--json"], env=env, capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    found = document(result)
    timeline = [(e["moment"], e["kind"], e["account_id"], e.get("fee"), e.get("deficit_covered"))
                for e in found["events"]]  # fmt: skip
    assert timeline == [
        (3, "margin_call", "bob", None, None),
        (5, "resolved", "bob", None, None),
        (6, "margin_call", "bob", None, None),
        (6, "liquidation", "bob", "0", "1000"),
        (7, "margin_call", "alice", None, None),
        (7, "liquidation", "alice", "44", "0"),
    ]
    # 376.3 / 450 and 378.4 / 600, cut toward zero to 8 decimals
    assert [e["margin_ratio"] for e in found["events"][:2]] == ["0.83622222", "0.63066666"]
    assert found["insurance_fund_end"] == "4044"

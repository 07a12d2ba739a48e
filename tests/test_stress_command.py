"""``marginwatch stress`` run as a user runs it: on a snapshot and on the live book, the table,
the JSON contract, and its options' errors."""

from __future__ import annotations

import io
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.cli.main import main
from marginwatch.cli.stress import Progress
from marginwatch.producer.publisher import Publisher
from marginwatch.state.fund import credit_ledger
from tests.commands import SCRIPT, document, run_command
from tests.stress_book import BOOK, write_brackets, write_snapshot
from tests.test_stress_adl import COUNTERPARTIES

D = Decimal
KEYS = ["read_at", "newest_tick", "consistent", "read_seconds", "scenario_seconds", "scenarios"]
SCENARIO_KEYS = [
    "name", "shocks", "pools_margin_call", "pools_liquidated", "accounts_liquidated",
    "liquidated_notional", "deficit", "insurance_fund", "fund_exhausted", "largest_contributors",
]  # fmt: skip
CONTRIBUTOR_KEYS = [
    "account_id", "pool", "status", "wallet_balance", "unrealized_pnl", "margin_balance",
    "notional", "deficit",
]  # fmt: skip


def stress(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``marginwatch stress`` with only ``settings`` (``MARGINWATCH_`` + name) set."""
    return run_command("stress", *args, **settings)


def test_the_json_contract_on_a_snapshot(tmp_path: Path) -> None:
    """The keys of the contract, in order; counts as integers, money and moves as decimal
    strings. BTCUSDT −20% on the tiny book (tests/test_stress.py works it out): 4 pools of 3
    accounts liquidated, bob's at margin call, a deficit of 1,000 + 400 = 1,400 that a fund of
    1,400 covers only just: exhausted."""
    snapshot = write_snapshot(tmp_path / "book.json")
    found = document(stress("--snapshot", str(snapshot), "--shock", "BTCUSDT:-20%",
                            "--insurance-fund", "1400", "--json"))  # fmt: skip
    assert list(found) == KEYS
    assert (found["newest_tick"], found["consistent"]) == (None, "one snapshot")
    assert found["read_at"].endswith("Z")
    assert D(found["read_seconds"]) >= 0
    assert D(found["scenario_seconds"]) >= 0
    [scenario] = found["scenarios"]
    assert list(scenario) == [*SCENARIO_KEYS, "deleveraged"]  # the fund is exhausted
    assert scenario["name"] == "BTCUSDT:-20%"
    assert scenario["shocks"] == {"BTCUSDT": "-0.20", "ETHUSDT": "0"}
    assert (scenario["pools_margin_call"], scenario["pools_liquidated"]) == (1, 4)
    assert scenario["accounts_liquidated"] == 3
    assert scenario["liquidated_notional"] == {"BTCUSDT": "52000", "ETHUSDT": "36000"}
    assert (scenario["deficit"], scenario["insurance_fund"]) == ("1400", "1400")
    assert scenario["fund_exhausted"] is True
    alice, erin = scenario["largest_contributors"]
    assert list(alice) == CONTRIBUTOR_KEYS
    assert alice == {
        "account_id": "alice", "pool": "cross", "status": "liquidation",
        "wallet_balance": "9000", "unrealized_pnl": "-10000", "margin_balance": "-1000",
        "notional": "70000", "deficit": "1000",
    }  # fmt: skip
    assert (erin["pool"], erin["deficit"]) == ("isolated:BTCUSDT:BOTH", "400")
    # A fund of 1,400 takes the whole deficit: nothing is left to deleverage.
    assert [(d["symbol"], d["bankrupt_side"], d["bankrupt_quantity"], d["quantity"])
            for d in scenario["deleveraged"]] == [("BTCUSDT", "LONG", "1.1", "0"),
                                                  ("ETHUSDT", "SHORT", "10", "0")]  # fmt: skip


def test_who_adl_takes_in_the_document_and_the_table(tmp_path: Path) -> None:
    """A fund of 700 for a deficit of 1,400: half of each bankrupt quantity is deleveraged,
    from the counterparties of tests/test_stress_adl.py (which works the figures out)."""
    book = [*BOOK, *COUNTERPARTIES]
    snapshot = write_snapshot(tmp_path / "book.json", book)
    args = ["--snapshot", str(snapshot), "--shock", "BTCUSDT:-20%", "--insurance-fund", "700"]
    [scenario] = document(stress(*args, "--adl-top", "2", "--json"))["scenarios"]
    btc, eth = scenario["deleveraged"]
    assert btc == {
        "symbol": "BTCUSDT", "bankrupt_side": "LONG", "bankrupt_quantity": "1.1",
        "quantity": "0.55", "counterparties": 3, "filled_by": 2, "unfilled": "0",
        "top": [
            {"account_id": "hal", "pool": "isolated:BTCUSDT:BOTH", "position_side": "BOTH",
             "quantity": "-0.4", "leverage_pnl": "0.04", "adl_quantile": 3, "taken": "0.4"},
            {"account_id": "gus", "pool": "cross", "position_side": "BOTH", "quantity": "-0.5",
             "leverage_pnl": "0.02", "adl_quantile": 1, "taken": "0.15"},
        ],
    }  # fmt: skip
    assert (eth["quantity"], eth["filled_by"], eth["unfilled"]) == ("5", 1, "1")
    table = stress(*args)
    assert table.returncode == 0, table.stderr
    assert "deleveraged in BTCUSDT:-20% (fund exhausted; quantities estimated):" in table.stdout
    assert "  BTCUSDT LONG bankrupt 1.1: 0.55 from 3 SHORT positions, filled by 2\n" in table.stdout
    assert "  ETHUSDT SHORT bankrupt 10: 5 from 1 LONG positions, filled by 1, 1 unfilled\n" in (
        table.stdout
    )
    assert "LeveragePnl         0.04  quantile 3  takes 0.4" in table.stdout


def test_rounds_of_price_impact_in_the_document_and_the_table(tmp_path: Path) -> None:
    """``--impact BTCUSDT:10%/52000``: round 1's net BTC sale of 52,000 moves BTCUSDT −10% to
    36,000, where round 2 liquidates bob (deficit 1,775; tests/test_stress_rounds.py works it
    out); the scenario's deficit is 1,400 + 1,775 = 3,175."""
    snapshot = write_snapshot(tmp_path / "book.json")
    args = ["--snapshot", str(snapshot), "--shock", "BTCUSDT:-20%", "--impact", "BTCUSDT:10%/52000"]
    [scenario] = document(stress(*args, "--json"))["scenarios"]
    assert list(scenario) == [*SCENARIO_KEYS, "converged", "rounds", "deleveraged"]  # fund 0
    assert (scenario["deficit"], scenario["pools_liquidated"], scenario["converged"]) == (
        "3175", 5, True)  # fmt: skip
    first, second = scenario["rounds"]
    assert (first["number"], first["moves"], first["marks"]) == (1, {}, {})
    assert first["net_forced_sale"] == {"BTCUSDT": "52000", "ETHUSDT": "-24000"}
    assert second == {
        "number": 2, "moves": {"BTCUSDT": "-0.1"}, "marks": {"BTCUSDT": "36000"},
        "pools_liquidated": 1, "liquidated_notional": {"BTCUSDT": "18000"},
        "net_forced_sale": {"BTCUSDT": "18000"}, "deficit": "1775",
    }  # fmt: skip
    table = stress(*args)
    assert table.returncode == 0, table.stderr
    assert "rounds of BTCUSDT:-20%:" in table.stdout
    assert "  round 2 after BTCUSDT -10.0000%: pools liquidated 1, notional 18,000.00, " \
        "deficit 1,775.00" in table.stdout  # fmt: skip


def test_without_impact_the_document_has_no_rounds(tmp_path: Path) -> None:
    """The contract's keys only: rounds are there with ``--impact`` alone, and who ADL takes
    with the fund exhausted alone (a fund of 2,000 covers the deficit of 1,400)."""
    snapshot = write_snapshot(tmp_path / "book.json")
    [scenario] = document(stress("--snapshot", str(snapshot), "--shock", "BTCUSDT:-20%",
                                 "--insurance-fund", "2000", "--json"))["scenarios"]  # fmt: skip
    assert list(scenario) == SCENARIO_KEYS


def test_a_fund_above_the_deficit_is_not_exhausted(tmp_path: Path) -> None:
    """1,400.01 covers the deficit of 1,400 and keeps a cent; at 0% nothing moves (``0``)."""
    snapshot = write_snapshot(tmp_path / "book.json")
    found = document(stress("--snapshot", str(snapshot), "--grid", "-20%:0%:20%",
                            "--insurance-fund", "1400.01", "--json"))  # fmt: skip
    crash, still = found["scenarios"]
    assert (crash["deficit"], crash["fund_exhausted"]) == ("1550", True)  # ETH −20% too
    assert still["shocks"] == {"BTCUSDT": "0", "ETHUSDT": "0"}
    assert (still["deficit"], still["fund_exhausted"]) == ("0", False)
    found = document(stress("--snapshot", str(snapshot), "--shock", "BTCUSDT:-20%",
                            "--insurance-fund", "1400.01", "--json"))  # fmt: skip
    assert found["scenarios"][0]["fund_exhausted"] is False
    assert found["scenarios"][0]["insurance_fund"] == "1400.01"


def test_a_grid_is_a_table_line_per_step_with_both_times(tmp_path: Path) -> None:
    """−30% to 30% by 5%: 13 lines, named ``*:-30%`` to ``*:+30%``; the read and the scenarios
    timed apart."""
    snapshot = write_snapshot(tmp_path / "book.json")
    result = stress("--snapshot", str(snapshot), "--grid", "-30%:30%:5%")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("scenario "))
    names = [line.split()[0] for line in lines[header + 1 : header + 14]]
    # *:0%: only erin's cross pool, at liquidation already (MB 50 < MM 60), 2 ETH × 3,000.
    assert lines[header + 7].split()[1:] == ["0", "1", "1", "6,000.00", "0.00", "no"]
    assert names == [f"*:{m:+d}%".replace("+0%", "0%") for m in range(-30, 31, 5)]
    assert lines[header + 14] == ""
    assert "(one snapshot, read at " in lines[0]
    assert "read the book in " in result.stdout
    assert "ran 13 scenarios in " in result.stdout
    assert "largest contributors to the deficit of *:-30% (exact):" in result.stdout


def test_the_live_book_is_what_accounts_load_stored(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """``accounts load`` of the snapshot into 4 partitions, marks published, ledgers of 1,000
    and 250: the live run gives the snapshot's scenario, read one partition at a time, with the
    newest tick's time and the fund of 1,250 (exhausted by the deficit of 1,400)."""
    settings = {"redis_url": redis_server.url, "partitions": "4",
                "brackets_file": str(write_brackets(tmp_path / "brackets.json"))}  # fmt: skip
    snapshot = write_snapshot(tmp_path / "book.json")
    environment = os.environ | {f"MARGINWATCH_{k.upper()}": v for k, v in settings.items()}
    load = subprocess.run([SCRIPT, "accounts", "load", str(snapshot)], capture_output=True,
                          text=True, timeout=120, check=False, env=environment)  # fmt: skip
    assert load.returncode == 0, load.stderr
    event_ms = 1_730_376_000_123  # 2024-10-31T12:00:00.123Z
    Publisher(redis_client).publish([Tick("BTCUSDT", D(50_000), event_ms - 5),
                                     Tick("ETHUSDT", D(3_000), event_ms)])  # fmt: skip
    credit_ledger(redis_client, 0, D(1_000))
    credit_ledger(redis_client, 2, D(250))
    live = document(stress("--shock", "BTCUSDT:-20%", "--json", **settings))
    assert (live["consistent"], live["newest_tick"]) == ("one read per partition",
                                                        "2024-10-31T12:00:00.123Z")  # fmt: skip
    [scenario] = live["scenarios"]
    assert (scenario["insurance_fund"], scenario["fund_exhausted"]) == ("1250", True)
    offline = document(stress("--snapshot", str(snapshot), "--shock", "BTCUSDT:-20%",
                              "--insurance-fund", "1250", "--json", **settings))  # fmt: skip
    assert live["scenarios"] == offline["scenarios"]
    assert scenario["deficit"] == "1400"


def _cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("MARGINWATCH_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--shock", "BTCUSDT:-20"], "--shock: 'BTCUSDT:-20': expected SYMBOL:MOVE% or *:MOVE%"),
        (["--shock", "BTCUSDT:-100%"], "--shock: 'BTCUSDT:-100%': the move must be above -100%"),
        (["--shock", "NOSUCHUSDT:-1%"], "--shock: NOSUCHUSDT has no bracket table"),
        (["--shock", "btcusdt:-1%", "--shock", "BTCUSDT:2%"], "--shock: BTCUSDT shocked twice"),
        (["--grid", "-30%:30%"], "--grid: '-30%:30%': expected START%:STOP%:STEP%"),
        (["--grid", "30%:-30%:5%"], "--grid: '30%:-30%:5%': expected START <= STOP"),
        (["--grid", "-30%:30%:0.05%"], "--grid: '-30%:30%:0.05%': more than 1000 scenarios"),
        (["--grid", "-5%:5%:5%", "--shock", "BTCUSDT:-1%"], "--grid: not with --shock"),
        ([], "--shock or --grid: give the scenarios, --shock SYMBOL:MOVE%"),
        (["--shock", "BTCUSDT:-20%", "--beta", "ETHUSDT=6"],
         "--beta: scenario BTCUSDT:-20%: ETHUSDT would move -120% (beta 6 × BTCUSDT -20%)"),
        (["--shock", "BTCUSDT:-20%", "--beta", "ETHUSDT=x"],
         "--beta: ETHUSDT=x: cannot read (No such file or directory); expected a JSON file"),
        (["--shock", "BTCUSDT:-20%", "--beta", "{list}"], "--beta: {list}: expected a JSON file"),
        (["--shock", "BTCUSDT:-20%", "--beta", "{bad}"], "--beta: {bad}: not valid JSON"),
        (["--shock", "BTCUSDT:-20%", "--beta", "{text}"],
         "--beta: {text}: ETHUSDT: expected a number, not 'high'"),
        (["--shock", "*:-20%", "--beta", "ETHUSDT=1.2"], "--beta-base: required when no --shock"),
        (["--shock", "BTCUSDT:-20%", "--beta", "BTCUSDT=2"],
         "--beta: BTCUSDT is the base: its beta is 1, not 2"),
        (["--shock", "BTCUSDT:-20%", "--beta-base", "BTCUSDT"], "--beta-base: only with --beta"),
        (["--shock", "BTCUSDT:-2%", "--insurance-fund", "lots"],
         "--insurance-fund: 'lots': expected USDT, e.g. 250000"),
        (["--shock", "BTCUSDT:-2%", "--impact", "BTCUSDT:1%"],
         "--impact: 'BTCUSDT:1%': expected SYMBOL:MOVE%/DEPTH or *:MOVE%/DEPTH"),
        (["--shock", "BTCUSDT:-2%", "--impact", "BTCUSDT:100%/5"],
         "--impact: 'BTCUSDT:100%/5': expected 0% < MOVE% < 100% and DEPTH > 0 USDT"),
        (["--shock", "BTCUSDT:-2%", "--impact", "BTCUSDT:1%/0"],
         "--impact: 'BTCUSDT:1%/0': expected 0% < MOVE% < 100% and DEPTH > 0 USDT"),
        (["--shock", "BTCUSDT:-2%", "--impact", "NOSUCHUSDT:1%/5"],
         "--impact: NOSUCHUSDT has no bracket table"),
        (["--shock", "BTCUSDT:-2%", "--impact", "*:1%/5", "--impact", "*:2%/5"],
         "--impact: * given twice"),
        (["--shock", "BTCUSDT:-2%", "--max-rounds", "3"], "--max-rounds: only with --impact"),
        (["--shock", "BTCUSDT:-2%", "--adl-top", "-1"], "--adl-top: -1: expected 0 or more"),
        (["--shock", "BTCUSDT:-2%", "--adl-symbols", "-1"],
         "--adl-symbols: -1: expected 0 or more"),
        (["--shock", "BTCUSDT:-2%", "--impact", "*:1%/5", "--max-rounds", "0"],
         "--max-rounds: 0: expected at least 1"),
    ],
)  # fmt: skip
def test_a_bad_option_is_one_line_naming_it(
    args: list[str],
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2 and one line: the option, what is wrong, and the format it expects."""
    _cleared(monkeypatch)
    files = {"list": "[1.2]", "bad": "{", "text": '{"ETHUSDT": "high"}'}
    paths = {name: tmp_path / f"{name}.json" for name in files}
    for name, text in files.items():
        paths[name].write_text(text, encoding="utf-8")
    given = [arg.format(**paths) for arg in args]
    snapshot = write_snapshot(tmp_path / "book.json")
    assert main(["stress", "--snapshot", str(snapshot), *given]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"marginwatch: {line.format(**paths)}"), stderr
    assert stderr.count("\n") == 1


def test_live_options_are_read_before_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fund is for a snapshot only; said before Redis is even asked (none is configured)."""
    _cleared(monkeypatch)
    assert main(["stress", "--shock", "BTCUSDT:-2%", "--insurance-fund", "5"]) == 2
    assert capsys.readouterr().err == (
        "marginwatch: --insurance-fund: with --snapshot only (live: the partitions' ledgers)\n"
    )


def test_a_missing_snapshot_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _cleared(monkeypatch)
    missing = tmp_path / "missing.json"
    assert main(["stress", "--snapshot", str(missing), "--shock", "*:-1%"]) == 2
    assert capsys.readouterr().err == (
        f"marginwatch: --snapshot: {missing}: cannot read (No such file or directory)\n"
    )


def test_progress_lines_come_at_most_once_a_second() -> None:
    """A step past a second says how far it got, on stderr, no more than once a second; a new
    step starts its second again."""
    clock = iter([0.0, 0.5, 1.2, 1.9, 2.3, 2.5, 3.0, 3.6]).__next__
    stream = io.StringIO()
    progress = Progress(stream, clock)
    for number in range(1, 5):
        progress.note(f"read partition {number} of 4")
    progress.restart()  # at 2.5
    progress.note("scenario 1 of 2 done")  # at 3.0
    progress.note("scenario 2 of 2 done")  # at 3.6
    assert stream.getvalue().splitlines() == [
        "marginwatch stress: read partition 2 of 4",
        "marginwatch stress: read partition 4 of 4",
        "marginwatch stress: scenario 2 of 2 done",
    ]

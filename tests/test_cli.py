"""The ``marginwatch evaluate`` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.adl_book import HAND_BOOK, HAND_QUANTILES, MARK
from tests.stress_book import MARKS, write_snapshot

EXAMPLE = Path(__file__).parent.parent / "examples" / "snapshot.json"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m marginwatch`` with ``args``."""
    return subprocess.run(
        [sys.executable, "-m", "marginwatch", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_console_script_is_installed() -> None:
    """``pip install .`` puts a ``marginwatch`` script beside the interpreter."""
    script = Path(sys.executable).parent / "marginwatch"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "evaluate" in result.stdout


def test_version_is_the_installed_distribution_s() -> None:
    """``marginwatch --version`` prints the version in the package metadata."""
    script = Path(sys.executable).parent / "marginwatch"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"marginwatch {version('marginwatch')}\n"


def test_evaluate_example_snapshot() -> None:
    """The example evaluates; numbers are decimal strings; order follows the input."""
    result = run("evaluate", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [a["account_id"] for a in report["accounts"]] == ["alice", "bob"]
    alice = report["accounts"][0]
    assert [p["symbol"] for p in alice["positions"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    btc = alice["positions"][0]
    # 1.5 × 67,250.5 = 100,875.75 (tier 2: 0.5%, cum 50) → MM 504.37875 − 50 = 454.37875
    assert btc["notional"] == "100875.75"
    assert btc["maintenance_margin"] == "454.37875"
    assert btc["margin_ratio"] is None
    sol = alice["positions"][2]
    assert sol["margin_mode"] == "isolated"
    assert sol["margin_ratio"] is not None
    bob = report["accounts"][1]
    assert bob["positions"][0]["liquidation_price"] == bob["positions"][1]["liquidation_price"]


def test_evaluate_reads_stdin_and_venue_flag() -> None:
    """``-`` reads stdin; ``--venue bybit`` switches the isolated convention."""
    snapshot: dict[str, Any] = {
        "mark_prices": {"BTCUSDT": "50000"},
        "brackets": {
            "BTCUSDT": [
                {
                    "notional_floor": 0,
                    "notional_cap": "1e12",
                    "max_leverage": 125,
                    "maintenance_margin_rate": "0.01",
                    "maintenance_amount": 0,
                }
            ]
        },
        "accounts": [
            {
                "account_id": "g",
                "cross_wallet_balance": 0,
                "positions": [
                    {
                        "symbol": "BTCUSDT",
                        "quantity": "0.2",
                        "entry_price": 50000,
                        "leverage": 10,
                        "margin_mode": "isolated",
                        "isolated_wallet": 1000,
                    }
                ],
            }
        ],
    }
    binance = run("evaluate", "-", stdin=json.dumps(snapshot))
    bybit = run("evaluate", "-", "--venue", "bybit", stdin=json.dumps(snapshot))
    price = json.loads(binance.stdout)["accounts"][0]["positions"][0]["liquidation_price"]
    assert price == "45454.54545454"  # 9,000 / 0.198, cut to 8 decimals
    bybit_price = json.loads(bybit.stdout)["accounts"][0]["positions"][0]["liquidation_price"]
    assert bybit_price == "45500"


def test_thresholds_flags_change_status() -> None:
    """``--warning-ratio`` and ``--margin-call-ratio`` move the statuses."""
    default = json.loads(run("evaluate", str(EXAMPLE)).stdout)
    strict = json.loads(
        run(
            "evaluate", str(EXAMPLE), "--warning-ratio", "0.01", "--margin-call-ratio", "0.02"
        ).stdout
    )
    assert default["accounts"][0]["cross"]["status"] == "ok"
    assert strict["accounts"][0]["cross"]["status"] == "margin_call"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("evaluate", "/nonexistent.json"), None, "/nonexistent.json: cannot read"),
        (("evaluate", "-"), "[1,", "snapshot: not valid JSON"),
        (
            ("evaluate", "-"),
            '{"mark_prices": {"BTCUSDT": "0"}, "accounts": []}',
            "mark_prices.BTCUSDT: must be positive",
        ),
        (
            ("evaluate", str(EXAMPLE), "--warning-ratio", "0.9"),
            None,
            "--warning-ratio/--margin-call-ratio: thresholds must satisfy",
        ),
        (
            ("evaluate", str(EXAMPLE), "--brackets", "/nonexistent.json"),
            None,
            "/nonexistent.json: cannot read",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    """Invalid input: exit status 2, nothing on stdout, one line on stderr naming the problem."""
    result = run(*args, stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"marginwatch: {message}")


def test_schema_command_prints_json_schema() -> None:
    """``marginwatch schema snapshot`` prints the generated JSON Schema."""
    schema = json.loads(run("schema", "snapshot").stdout)
    assert set(schema["required"]) == {"mark_prices", "accounts"}


@pytest.mark.parametrize("document", ["snapshot", "report"])
def test_published_schemas_are_current(document: str) -> None:
    """docs/schemas holds exactly what the models generate."""
    published = EXAMPLE.parent.parent / "docs" / "schemas" / f"{document}.schema.json"
    assert json.loads(published.read_text()) == json.loads(run("schema", document).stdout)


def test_evaluate_ranks_adl_quantiles_among_the_snapshot(tmp_path: Path) -> None:
    """Each position's ``adl_quantile`` is its rank among the snapshot's positions of its
    symbol and side (tests/adl_book.py works them out); the report says so, and validates
    against the published schema of version 2."""
    snapshot = write_snapshot(tmp_path / "book.json", HAND_BOOK, {**MARKS, **MARK})
    result = run("evaluate", str(snapshot))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    found = {a["account_id"]: tuple(p["adl_quantile"] for p in a["positions"])
             for a in report["accounts"]}  # fmt: skip
    assert found == HAND_QUANTILES
    assert report["adl"] == {"ranked_among": "snapshot"}
    schema = json.loads((EXAMPLE.parent.parent / "docs/schemas/report.schema.json").read_text())
    assert schema["version"] == 2
    jsonschema.validate(report, schema)

"""Bracket tables: lookup convention, validation, Binance JSON, the shipped default table."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from marginwatch.engine.brackets import (
    BracketTableError,
    binance_document,
    default_tables,
    load_bracket_file,
    tables_from_binance_json,
)
from tests.tables import BTC_2024, table

D = Decimal


@pytest.mark.parametrize(
    ("notional", "rate"),
    [
        (0, "0.004"),
        (49_999, "0.004"),
        (50_000, "0.005"),
        (599_999, "0.005"),
        (600_000, "0.0065"),
        (10**10, "0.5"),
    ],
)
def test_floor_inclusive_cap_exclusive(notional: int, rate: str) -> None:
    """A notional on a floor belongs to the tier starting there; past the last cap, the last."""
    assert BTC_2024.bracket_for(D(notional)).maintenance_margin_rate == D(rate)


def test_rejects_gap_between_tiers() -> None:
    """Tiers must be contiguous: cap of one equals floor of the next."""
    with pytest.raises(BracketTableError, match=r"brackets\.XUSDT\[1\]\.notional_floor"):
        table("XUSDT", [(0, 50_000, 125, "0.004", 0), (60_000, 100_000, 100, "0.005", 50)])


def test_rejects_descending_tiers() -> None:
    """Tiers must ascend."""
    with pytest.raises(BracketTableError, match="ascending and contiguous"):
        table("XUSDT", [(0, 50_000, 125, "0.004", 0), (0, 50_000, 100, "0.005", 50)])


def test_rejects_nonzero_first_floor() -> None:
    """The first tier starts at notional 0."""
    with pytest.raises(BracketTableError, match=r"\[0\]\.notional_floor: must be 0"):
        table("XUSDT", [(10, 50_000, 125, "0.004", 0)])


def test_takes_cum_as_given() -> None:
    """cum is not recomputed: a table whose cum breaks the identity is still accepted as is."""
    odd = table("XUSDT", [(0, 50_000, 125, "0.004", 0), (50_000, 100_000, 100, "0.005", 7)])
    assert odd.brackets[1].maintenance_amount == 7


def test_loads_binance_leverage_bracket_json(tmp_path: Path) -> None:
    """The shape of GET /fapi/v1/leverageBracket loads, tiers sorted by bracket number."""
    document = [
        {
            "symbol": "XUSDT",
            "brackets": [
                {
                    "bracket": 2,
                    "initialLeverage": 20,
                    "notionalCap": 100000,
                    "notionalFloor": 5000,
                    "maintMarginRatio": 0.025,
                    "cum": 75.0,
                },
                {
                    "bracket": 1,
                    "initialLeverage": 50,
                    "notionalCap": 5000,
                    "notionalFloor": 0,
                    "maintMarginRatio": 0.01,
                    "cum": 0.0,
                },
            ],
        }
    ]
    path = tmp_path / "brackets.json"
    path.write_text(json.dumps(document))
    tables = load_bracket_file(str(path))
    assert tables["XUSDT"].bracket_for(D(5000)).maintenance_amount == D("75.0")
    assert tables["XUSDT"].max_leverage_for(D(4999)) == 50


def test_binance_document_reads_back_as_the_same_tables(tmp_path: Path) -> None:
    """Every shipped table written in the leverageBracket shape loads back equal, tier by tier
    and digit by digit."""
    path = tmp_path / "brackets.json"
    path.write_text(json.dumps(binance_document(default_tables().values())), encoding="utf-8")
    loaded = load_bracket_file(str(path))
    assert list(loaded) == list(default_tables())
    for symbol, shipped in default_tables().items():
        assert loaded[symbol] == shipped
        assert [str(b.maintenance_margin_rate) for b in loaded[symbol].brackets] == [
            str(b.maintenance_margin_rate) for b in shipped.brackets
        ]


def test_binance_json_errors_name_the_entry() -> None:
    """A malformed entry is reported with its index."""
    with pytest.raises(BracketTableError, match=r"leverageBracket\[0\]"):
        tables_from_binance_json([{"symbol": "XUSDT"}])


def test_default_table_is_dated_and_large() -> None:
    """The shipped table holds the majors and hundreds of perpetuals, all valid."""
    tables = default_tables()
    assert len(tables) >= 300
    for symbol in (
        "BTCUSDT",
        "ETHUSDT",
        "SOLUSDT",
        "XRPUSDT",
        "DOGEUSDT",
        "BNBUSDT",
        "ADAUSDT",
        "LINKUSDT",
        "AVAXUSDT",
        "LTCUSDT",
        "DOTUSDT",
        "TRXUSDT",
        "BCHUSDT",
        "ZECUSDT",
    ):
        assert symbol in tables


def test_default_table_matches_reference_btc_eth_zec() -> None:
    """BTCUSDT, ETHUSDT and ZECUSDT rows equal the reference §5 tables."""
    tables = default_tables()
    assert tables["BTCUSDT"].brackets == BTC_2024.brackets
    eth = tables["ETHUSDT"].brackets[5]
    assert (eth.notional_floor, eth.notional_cap) == (D(50_000_000), D(65_000_000))
    assert (eth.maintenance_margin_rate, eth.maintenance_amount) == (D("0.025"), D(381_450))
    zec = tables["ZECUSDT"].brackets[0]
    assert (zec.max_leverage, zec.maintenance_margin_rate) == (50, D("0.015"))

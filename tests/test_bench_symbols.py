"""The benchmarks' symbols past the shipped bracket tables: synthetic ones reusing real brackets,
handed to the daemons as a brackets file."""

from __future__ import annotations

from pathlib import Path

from benchmarks.pipeline.book import pick_symbols
from benchmarks.symbols import symbol_tables, synthetic_count, venue_tables, write_brackets_file
from marginwatch.base.settings import Settings, bracket_tables
from marginwatch.engine.brackets import default_tables

SHIPPED = list(default_tables().values())


def test_synthetic_symbols_follow_the_shipped_ones_with_their_brackets() -> None:
    """450 symbols: the shipped ones in order, then SYN0001USDT... with the first ones'
    brackets; past twice the shipped count, the brackets cycle again."""
    tables = symbol_tables(450)
    assert len(tables) == 450
    assert list(tables)[: len(SHIPPED)] == [table.symbol for table in SHIPPED]
    synthetic = list(tables.values())[len(SHIPPED) :]
    assert synthetic[0].symbol == "SYN0001USDT"
    assert [t.brackets for t in synthetic] == [t.brackets for t in SHIPPED[: len(synthetic)]]
    cycled = symbol_tables(2 * len(SHIPPED) + 1)
    assert cycled[f"SYN{len(SHIPPED) + 1:04d}USDT"].brackets == SHIPPED[0].brackets
    assert list(symbol_tables(10).values()) == SHIPPED[:10]


def test_venue_tables_hold_every_shipped_symbol() -> None:
    """Fewer symbols than shipped: every shipped table, none synthetic."""
    assert venue_tables(20) == dict(default_tables())
    assert synthetic_count(venue_tables(20)) == 0
    assert synthetic_count(venue_tables(400)) == 400 - len(SHIPPED)


def test_the_daemons_read_the_brackets_file_and_the_producer_picks_every_symbol(
    tmp_path: Path,
) -> None:
    """What MARGINWATCH_BRACKETS_FILE names loads as the same tables; --symbols 450 picks all
    of them, majors first."""
    tables = venue_tables(450)
    path = write_brackets_file(tables, tmp_path / "brackets.json")
    assert bracket_tables(Settings(brackets_file=str(path))) == tables
    picked = pick_symbols(450, tables)
    assert picked[0] == "BTCUSDT"
    assert sorted(picked) == sorted(tables)

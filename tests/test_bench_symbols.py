"""The benchmarks' symbols past the shipped bracket tables: synthetic ones reusing real
brackets."""

from __future__ import annotations

from benchmarks.symbols import symbol_tables
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

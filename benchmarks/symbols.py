"""As many symbols as a venue lists: the shipped bracket tables, then synthetic symbols
(``SYN0001USDT``, ``SYN0002USDT``, ...) each reusing a shipped symbol's brackets."""

from __future__ import annotations

from marginwatch.engine.brackets import BracketTable, default_tables

SYNTHETIC_SYMBOL = "SYN{number:04d}USDT"


def symbol_tables(count: int) -> dict[str, BracketTable]:
    """``count`` symbols' tables: the shipped ones in their file's order, then synthetic ones,
    the n-th with the brackets of the n-th shipped symbol (cycled past the last)."""
    shipped = list(default_tables().values())
    tables = {table.symbol: table for table in shipped[:count]}
    for number in range(count - len(shipped)):
        name = SYNTHETIC_SYMBOL.format(number=number + 1)
        tables[name] = BracketTable(name, shipped[number % len(shipped)].brackets)
    return tables

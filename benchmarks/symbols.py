"""As many symbols as a venue lists: the shipped bracket tables, then synthetic symbols
(``SYN0001USDT``, ``SYN0002USDT``, ...) each reusing a shipped symbol's brackets, for the
engine benchmark and the pipeline benchmark alike; and the brackets file that hands them to
the daemons (``MARGINWATCH_BRACKETS_FILE``, in the ``leverageBracket`` shape)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from marginwatch.engine.brackets import BracketTable, binance_document, default_tables

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


def venue_tables(count: int) -> dict[str, BracketTable]:
    """Every shipped table, and synthetic symbols past them up to ``count`` symbols in all."""
    return symbol_tables(max(count, len(default_tables())))


def write_brackets_file(tables: Mapping[str, BracketTable], path: Path) -> Path:
    """``tables`` as a file ``MARGINWATCH_BRACKETS_FILE`` can name; returns ``path``."""
    path.write_text(json.dumps(binance_document(tables.values())), encoding="utf-8")
    return path


def synthetic_count(symbols: Iterable[str]) -> int:
    """How many of ``symbols`` have no shipped table."""
    return sum(symbol not in default_tables() for symbol in symbols)

"""Leverage bracket tables: validation, tier lookup, and the shipped dated default table.

A table is taken as given (``maintenance_amount`` is not recomputed) but must be usable: tiers
ascending and contiguous from a zero floor, rates non-decreasing (so maintenance margin is
convex in the notional, which the liquidation-price search relies on).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from marginwatch.engine.types import Bracket

DEFAULT_TABLE_DATE = "2024-10-31"
_DEFAULT_TABLE_FILE = f"binance_brackets_{DEFAULT_TABLE_DATE}.json"


class BracketTableError(ValueError):
    """A bracket table that cannot be used; the message names the symbol and tier."""


@dataclass(frozen=True, slots=True)
class BracketTable:
    """The brackets of one symbol, lowest tier first."""

    symbol: str
    brackets: tuple[Bracket, ...]

    _floors: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_contiguous(self.symbol, self.brackets)
        floors = tuple(bracket.notional_floor for bracket in self.brackets)
        object.__setattr__(self, "_floors", floors)

    def tier_index(self, notional: Decimal) -> int:
        """Index of the tier holding ``notional``; past the last cap, the last tier."""
        index = bisect.bisect_right(self._floors, notional) - 1
        return max(index, 0)

    def bracket_for(self, notional: Decimal) -> Bracket:
        """The bracket whose ``[floor, cap)`` holds ``notional`` (floor inclusive)."""
        return self.brackets[self.tier_index(notional)]

    def max_leverage_for(self, notional: Decimal) -> int:
        """Highest leverage allowed at this notional (the tier's ``initialLeverage``)."""
        return self.bracket_for(notional).max_leverage


def _check_contiguous(symbol: str, brackets: tuple[Bracket, ...]) -> None:
    if not brackets:
        raise BracketTableError(f"brackets.{symbol}: at least one tier is required")
    if brackets[0].notional_floor != 0:
        raise BracketTableError(f"brackets.{symbol}[0].notional_floor: must be 0")
    for index, bracket in enumerate(brackets):
        where = f"brackets.{symbol}[{index}]"
        if bracket.notional_cap <= bracket.notional_floor:
            raise BracketTableError(f"{where}.notional_cap: must exceed notional_floor")
        if not 0 <= bracket.maintenance_margin_rate < 1:
            raise BracketTableError(f"{where}.maintenance_margin_rate: must be in [0, 1)")
        if bracket.max_leverage < 1:
            raise BracketTableError(f"{where}.max_leverage: must be at least 1")
        if index == 0:
            continue
        previous = brackets[index - 1]
        if bracket.notional_floor != previous.notional_cap:
            raise BracketTableError(
                f"{where}.notional_floor: tiers must be ascending and contiguous "
                f"(expected {previous.notional_cap}, got {bracket.notional_floor})"
            )
        if bracket.maintenance_margin_rate < previous.maintenance_margin_rate:
            raise BracketTableError(f"{where}.maintenance_margin_rate: must not decrease")


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


def table_from_binance(symbol: str, raw_brackets: Iterable[Mapping[str, Any]]) -> BracketTable:
    """One symbol from ``GET /fapi/v1/leverageBracket`` (``brackets[]`` of an entry)."""
    rows = sorted(raw_brackets, key=lambda row: int(row["bracket"]))
    brackets = tuple(
        Bracket(
            notional_floor=_decimal(row["notionalFloor"]),
            notional_cap=_decimal(row["notionalCap"]),
            max_leverage=int(row["initialLeverage"]),
            maintenance_margin_rate=_decimal(row["maintMarginRatio"]),
            maintenance_amount=_decimal(row["cum"]),
        )
        for row in rows
    )
    return BracketTable(symbol, brackets)


def tables_from_binance_json(document: Any) -> dict[str, BracketTable]:
    """All symbols of a ``leverageBracket`` response (a list of ``{symbol, brackets}``)."""
    if not isinstance(document, list):
        raise BracketTableError("leverageBracket document: expected a JSON array")
    tables: dict[str, BracketTable] = {}
    for index, entry in enumerate(document):
        try:
            symbol = str(entry["symbol"])
            tables[symbol] = table_from_binance(symbol, entry["brackets"])
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:
            if isinstance(error, BracketTableError):
                raise
            raise BracketTableError(f"leverageBracket[{index}]: {error!r}") from error
    return tables


def binance_document(tables: Iterable[BracketTable]) -> list[dict[str, Any]]:
    """The ``leverageBracket`` response shape of ``tables`` (what ``tables_from_binance_json``
    reads): numbers as JSON numbers, tiers numbered from 1."""
    return [
        {"symbol": table.symbol,
         "brackets": [_binance_bracket(number, bracket)
                      for number, bracket in enumerate(table.brackets, start=1)]}
        for table in tables
    ]  # fmt: skip


def _binance_bracket(number: int, bracket: Bracket) -> dict[str, Any]:
    return {
        "bracket": number,
        "initialLeverage": bracket.max_leverage,
        "notionalCap": _number(bracket.notional_cap),
        "notionalFloor": _number(bracket.notional_floor),
        "maintMarginRatio": _number(bracket.maintenance_margin_rate),
        "cum": _number(bracket.maintenance_amount),
    }


def _number(value: Decimal) -> int | float:
    """An integral value as an int, else the float whose shortest form reads back as ``value``."""
    return int(value) if value == value.to_integral_value() else float(value)


def load_bracket_file(path: str) -> dict[str, BracketTable]:
    """Read a user's file in the JSON shape of Binance's ``leverageBracket`` response."""
    with open(path, encoding="utf-8") as handle:
        return tables_from_binance_json(json.load(handle))


@cache
def default_tables() -> Mapping[str, BracketTable]:
    """The shipped Binance table, dated ``DEFAULT_TABLE_DATE``; load live tables in production."""
    text = resources.files("marginwatch").joinpath("data", _DEFAULT_TABLE_FILE).read_text("utf-8")
    return tables_from_binance_json(json.loads(text))

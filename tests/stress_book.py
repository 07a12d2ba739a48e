"""A tiny book for the stress tests, with round numbers so that every figure can be worked out
by hand (``tests/test_stress.py`` does), and the files that carry it to the command."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from marginwatch.engine.brackets import BracketTable, binance_document
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.state.accounts import account_to_json
from tests.tables import flat

D = Decimal
# One tier of 1% and no maintenance amount: MM = 1% of the notional, whatever its size.
TABLES = {"BTCUSDT": flat("BTCUSDT", "0.01"), "ETHUSDT": flat("ETHUSDT", "0.01")}
MARKS = {"BTCUSDT": D(50_000), "ETHUSDT": D(3_000)}
CROSS, ISOLATED = MarginMode.CROSS, MarginMode.ISOLATED


def cross(symbol: str, quantity: str, entry: int) -> Position:
    return Position(symbol, D(quantity), D(entry), 20, CROSS)


def isolated(symbol: str, quantity: str, entry: int, wallet: str) -> Position:
    return Position(symbol, D(quantity), D(entry), 5, ISOLATED, isolated_wallet=D(wallet))


# alice: one cross pool, long 1 BTC and short 10 ETH on a 9,000 wallet.
# bob: an isolated long of 0.5 BTC on 5,225 (his cross pool is empty).
# carol: an isolated short of 2 ETH on 300.
# dave: a cross long of 0.2 BTC on 2,050.
# erin: an isolated long of 0.1 BTC on 600, and a cross long of 2 ETH on 50 (MB 50 below MM 60:
# at liquidation already).
BOOK = (
    Account("alice", D(9_000), (cross("BTCUSDT", "1", 50_000), cross("ETHUSDT", "-10", 3_000))),
    Account("bob", D(0), (isolated("BTCUSDT", "0.5", 50_000, "5225"),)),
    Account("carol", D(0), (isolated("ETHUSDT", "-2", 3_000, "300"),)),
    Account("dave", D(2_050), (cross("BTCUSDT", "0.2", 50_000),)),
    Account("erin", D(50), (isolated("BTCUSDT", "0.1", 50_000, "600"),
                            cross("ETHUSDT", "2", 3_000))),
)  # fmt: skip


def write_snapshot(
    path: Path, accounts: Iterable[Account] = BOOK, marks: Mapping[str, Decimal] = MARKS
) -> Path:
    """The snapshot of ``accounts`` at ``marks``, with ``TABLES`` as its brackets."""
    document: dict[str, Any] = {
        "mark_prices": {symbol: str(mark) for symbol, mark in marks.items()},
        "brackets": {symbol: [_tier(table)] for symbol, table in TABLES.items()},
        "accounts": [json.loads(account_to_json(account)) for account in accounts],
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _tier(table: BracketTable) -> dict[str, str | int]:
    bracket = table.brackets[0]
    return {
        "notional_floor": str(bracket.notional_floor),
        "notional_cap": str(bracket.notional_cap),
        "max_leverage": bracket.max_leverage,
        "maintenance_margin_rate": str(bracket.maintenance_margin_rate),
        "maintenance_amount": str(bracket.maintenance_amount),
    }


def write_brackets(path: Path) -> Path:
    """``TABLES`` as a ``leverageBracket`` file (``MARGINWATCH_BRACKETS_FILE``)."""
    path.write_text(json.dumps(binance_document(TABLES.values())), encoding="utf-8")
    return path

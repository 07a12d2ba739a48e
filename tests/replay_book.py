"""The book and the path of the replay comparison (``tests/test_replay_live.py``): a few dozen
accounts, cross and isolated, one-way and hedge, each of whose wallets is worked out to put its
pool at a chosen margin ratio at a chosen level of a crash and its recovery.

Each level moves BTCUSDT and ETHUSDT together (one event time); the maintenance margin is the
shipped tables' first tier (0.4% of a notional below 50,000, both symbols). Clearance fees are
0.2% (0.1% on ETHUSDT): below the 0.4% maintenance rate, so a pool liquidated with its margin
balance still above half its MM pays its whole fee and keeps a remainder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from marginwatch.engine.brackets import default_tables
from marginwatch.engine.exact import evaluate_pool
from marginwatch.engine.types import (
    Account,
    MarginMode,
    Position,
    PositionMode,
    PositionSide,
    Thresholds,
)
from marginwatch.state.accounts import account_to_json

D = Decimal
CROSS, ISOLATED = MarginMode.CROSS, MarginMode.ISOLATED
LONG, SHORT, BOTH = PositionSide.LONG, PositionSide.SHORT, PositionSide.BOTH
HEDGE = PositionMode.HEDGE
FEE_SETTINGS = {"LIQUIDATION_FEE_RATE": "0.002", "LIQUIDATION_FEE_RATES": '{"ETHUSDT": "0.001"}'}
# (BTCUSDT, ETHUSDT) at each level: down, a small bounce, up, down to a crash, back above.
LEVELS: list[tuple[int, int]] = [
    (60_000, 3_000),  # 0: the snapshot's marks
    (59_000, 2_950),  # 1
    (58_000, 2_900),  # 2: the first margin calls
    (58_040, 2_901),  # 3: a bounce into the hysteresis band (below 0.8, not below 0.75)
    (59_500, 2_975),  # 4: resolved
    (57_500, 2_875),  # 5: called again, liquidated in deficit; other calls
    (57_500, 2_850),  # 6: ETHUSDT alone: isolated ETH longs liquidated, remainders returned
    (56_000, 2_800),  # 7: liquidations with their whole fee
    (54_000, 2_700),  # 8
    (51_000, 2_550),  # 9: the bottom
    (55_000, 2_750),  # 10
    (60_000, 3_000),  # 11
    (61_500, 3_075),  # 12: above the start: shorts called and liquidated
]
TABLES = default_tables()


def marks(level: int) -> dict[str, Decimal]:
    btc, eth = LEVELS[level]
    return {"BTCUSDT": D(btc), "ETHUSDT": D(eth)}


def position(symbol: str, quantity: str, entry: int, side: PositionSide = BOTH) -> Position:
    """A cross position at 10x."""
    return Position(symbol, D(quantity), D(entry), 10, CROSS, side)


def wallet_for(positions: Sequence[Position], level: int, ratio: str) -> Decimal:
    """The wallet that puts the pool at ``ratio`` at ``level``: ``MM / ratio − Σ UPNL``, to
    the cent above (a margin ratio a hair below ``ratio``)."""
    report = evaluate_pool(D(0), positions, marks(level), TABLES, Thresholds())
    wallet = report.maintenance_margin / D(ratio) - report.unrealized_pnl
    return wallet.quantize(D("0.01"), rounding=ROUND_CEILING)


def isolated(base: Position, level: int, ratio: str) -> Position:
    """``base`` as an isolated position whose wallet puts it at ``ratio`` at ``level``."""
    wallet = wallet_for([base], level, ratio)
    return Position(base.symbol, base.quantity, base.entry_price, base.leverage, ISOLATED,
                    base.position_side, wallet)  # fmt: skip


def cross_account(name: str, positions: Sequence[Position], level: int, ratio: str,
                  mode: PositionMode = PositionMode.ONE_WAY,
                  also: Sequence[Position] = ()) -> Account:  # fmt: skip
    """An account whose cross pool (``positions``) is at ``ratio`` at ``level``."""
    return Account(name, wallet_for(positions, level, ratio), (*positions, *also), mode)


BOUNCES = ("0.3", "0.5", "0.7")  # BTCUSDT quantities of the accounts called at level 2


def book() -> list[Account]:
    """Every account of the comparison (the comments name each one's course)."""
    btc, eth = "BTCUSDT", "ETHUSDT"
    return [
        # called at 2, held through the bounce at 3, resolved at 4, liquidated in deficit at 5
        *(cross_account(f"bounce-{q}", [position(btc, q, 60_000)], 2, "0.9") for q in BOUNCES),
        cross_account("bounce-eth", [position(eth, "8", 3_000)], 2, "0.9"),
        cross_account(
            "bounce-hedge",
            [position(btc, "0.6", 60_000, LONG), position(btc, "-0.2", 61_000, SHORT)],
            2,
            "0.9",
            HEDGE,
        ),
        Account("bounce-isolated", D(500), (isolated(position(btc, "0.4", 60_000), 2, "0.9"),)),
        # called at 5 and still in the band at 6, where the isolated ETH long beside it is
        # liquidated (its whole fee paid) and its remainder resolves the cross pool's episode
        cross_account(
            "remainder",
            [position(btc, "0.5", 60_000)],
            5,
            "0.9",
            also=[isolated(position(eth, "10", 3_000), 6, "1.2")],
        ),
        cross_account(
            "remainder-hedge",
            [position(btc, "0.5", 60_000, LONG)],
            5,
            "0.9",
            HEDGE,
            also=[isolated(position(eth, "12", 3_000, LONG), 6, "1.2")],
        ),
        # straight from ok to liquidation at 7 with the margin balance above the fee
        *(cross_account(f"fee-{q}", [position(eth, q, 3_000)], 7, "1.2") for q in ("5", "9")),
        Account("fee-isolated", D(300), (isolated(position(btc, "0.3", 60_000), 7, "1.2"),)),
        Account(
            "fee-isolated-hedge",
            D(800),
            (
                isolated(position(btc, "0.2", 60_000, LONG), 7, "1.2"),
                isolated(position(btc, "-0.2", 60_000, SHORT), 12, "0.9"),
            ),
            HEDGE,
        ),
        # called at 8, liquidated in deficit at the bottom
        cross_account(
            "crash", [position(btc, "0.5", 60_000), position(eth, "-2", 3_000)], 8, "0.85"
        ),
        cross_account(
            "crash-hedge",
            [position(eth, "10", 3_000, LONG), position(eth, "-4", 3_100, SHORT)],
            8,
            "0.9",
            HEDGE,
        ),
        # shorts: called at 12 (above the start)
        cross_account("short", [position(btc, "-0.5", 60_000)], 12, "0.9"),
        Account("short-isolated", D(50), (isolated(position(eth, "-6", 3_000), 12, "1.2"),)),
        *healthy(),
    ]


def healthy() -> list[Account]:
    """Accounts that nothing happens to (margin ratios far below the warning level)."""
    return [
        Account(f"healthy-{n}", D(20_000 + 1_000 * n),
                (position("BTCUSDT", f"0.{n + 1}", 60_000),
                 position("ETHUSDT", f"-{n + 1}", 3_000)))
        for n in range(8)
    ] + [
        Account(f"healthy-isolated-{n}", D(100),
                (isolated(position("ETHUSDT", f"{n + 1}", 3_000), 0, "0.01"),))
        for n in range(8)
    ]  # fmt: skip


def write_snapshot(path: Path, accounts: Sequence[Account]) -> Path:
    """The book at level 0's marks, in the snapshot schema."""
    document: dict[str, Any] = {
        "mark_prices": {symbol: str(mark) for symbol, mark in marks(0).items()},
        "accounts": [json.loads(account_to_json(account)) for account in accounts],
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path

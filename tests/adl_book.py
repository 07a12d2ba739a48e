"""A small book whose ADL scores and quantiles are worked out by hand (reference §2.7), for
the engine's tests and the commands' (``tests/test_adl.py``, ``tests/test_cli.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, PositionSide
from tests.tables import flat

D = Decimal
FLAT: Mapping[str, BracketTable] = {"BTCUSDT": flat("BTCUSDT", "0.01")}  # MM = 1% of notional
MARK = {"BTCUSDT": D(50_000)}
CROSS, ISOLATED = MarginMode.CROSS, MarginMode.ISOLATED
LONG, SHORT = PositionSide.LONG, PositionSide.SHORT


def cross(quantity: str, entry: int, side: PositionSide = PositionSide.BOTH) -> Position:
    return Position("BTCUSDT", D(quantity), D(entry), 10, CROSS, side)


def isolated(quantity: str, entry: int, wallet: int) -> Position:
    return Position("BTCUSDT", D(quantity), D(entry), 10, ISOLATED, isolated_wallet=D(wallet))


# At BTC 50,000, MM = 1% of the notional:
# a: UPNL 10,000, MM 500, MB 11,000: 10,000 / 1,000 × 500 / 11,000 = 5/11
# b: UPNL 5,000, MM 500, MB 15,000: 5,000 / 10,000 × 500 / 15,000 = 1/60
# c: isolated, UPNL 100, MM 50, MB 600: 100 / 500 × 50 / 600 = 1/60 (ties with b)
# d: a wallet of 0.5 counts as 1: UPNL 10, MM 5, MB 10.5: 10 / 1 × 5 / 10.5 = 100/21
# e: UPNL −5,000: 0
# f: hedge, LONG 0.1 from 50,000 (UPNL 0: 0) and SHORT 0.1 from 60,000 (UPNL 1,000), one cross
#    pool: MM 50 + 50, MB 2,000 + 1,000: 1,000 / 2,000 × 100 / 3,000 = 1/60
# g: short, UPNL 2,000, MM 500, MB 5,000: 2,000 / 3,000 × 500 / 5,000 = 1/15
# h: isolated short, UPNL 0: 0
HAND_BOOK = (
    Account("a", D(1_000), (cross("1", 40_000),)),
    Account("b", D(10_000), (cross("1", 45_000),)),
    Account("c", D(0), (isolated("0.1", 49_000, 500),)),
    Account("d", D("0.5"), (cross("0.01", 49_000),)),
    Account("e", D(6_000), (cross("1", 55_000),)),
    Account("f", D(2_000), (cross("0.1", 50_000, LONG), cross("-0.1", 60_000, SHORT)),
            PositionMode.HEDGE),
    Account("g", D(3_000), (cross("-1", 52_000),)),
    Account("h", D(0), (isolated("-0.2", 50_000, 1_000),)),
)  # fmt: skip
HAND_SCORES = {
    "a": [D(5) / 11], "b": [D(1) / 60], "c": [D(1) / 60], "d": [D(100) / 21], "e": [D(0)],
    "f": [D(0), D(1) / 60], "g": [D(1) / 15], "h": [D(0)],
}  # fmt: skip
# Longs (6): e 0, f 0, b and c 1/60 (2 below: 10 // 6 = 1), a (4 below: 20 // 6 = 3),
# d (5 below: 25 // 6 = 4). Shorts (3): h 0, f 1/60 (1 below: 5 // 3 = 1), g (2 below: 10 // 3
# = 3). f's LONG leg scores 0 but shares its SHORT leg's 1 (one cross pool).
HAND_QUANTILES = {"a": (3,), "b": (1,), "c": (1,), "d": (4,), "e": (0,), "f": (1, 1), "g": (3,),
                  "h": (0,)}  # fmt: skip

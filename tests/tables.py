"""Bracket tables written out for the worked examples (reference §5), as test data."""

from __future__ import annotations

from decimal import Decimal

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Bracket

Row = tuple[int, int, int, str, int]


def table(symbol: str, rows: list[Row]) -> BracketTable:
    """A table from ``(floor, cap, max leverage, MMR, cum)`` rows."""
    brackets = tuple(
        Bracket(Decimal(floor), Decimal(cap), leverage, Decimal(rate), Decimal(amount))
        for floor, cap, leverage, rate, amount in rows
    )
    return BracketTable(symbol, brackets)


def flat(symbol: str, rate: str, max_leverage: int = 125) -> BracketTable:
    """One tier for every notional, no maintenance amount (for guide examples)."""
    return table(symbol, [(0, 10**12, max_leverage, rate, 0)])


# BTCUSDT as in the FAQ era (2020-21), reference §5 "Older tables".
BTC_FAQ_ERA = table(
    "BTCUSDT",
    [
        (0, 50_000, 125, "0.004", 0),
        (50_000, 250_000, 100, "0.005", 50),
        (250_000, 1_000_000, 50, "0.01", 1_300),
        (1_000_000, 10_000_000, 20, "0.025", 16_300),
        (10_000_000, 20_000_000, 10, "0.05", 266_300),
        (20_000_000, 50_000_000, 5, "0.1", 1_266_300),
        (50_000_000, 100_000_000, 4, "0.125", 2_516_300),
        (100_000_000, 200_000_000, 3, "0.15", 5_016_300),
        (200_000_000, 300_000_000, 2, "0.25", 25_016_300),
        (300_000_000, 500_000_000, 1, "0.5", 100_016_300),
    ],
)

# ETHUSDT of the FAQ era: the example uses the 2M-5M tier (10%, cum 135,365); the lower tiers
# are the ones whose cum identity (cum_n = cum_{n-1} + floor_n × ΔMMR) yields 135,365.
ETH_FAQ_ERA = table(
    "ETHUSDT",
    [
        (0, 10_000, 100, "0.005", 0),
        (10_000, 100_000, 75, "0.0065", 15),
        (100_000, 500_000, 50, "0.01", 365),
        (500_000, 1_000_000, 25, "0.02", 5_365),
        (1_000_000, 2_000_000, 10, "0.05", 35_365),
        (2_000_000, 5_000_000, 5, "0.1", 135_365),
        (5_000_000, 10_000_000, 4, "0.125", 260_365),
    ],
)

# BTCUSDT, 2024-10-24 (reference §5).
BTC_2024 = table(
    "BTCUSDT",
    [
        (0, 50_000, 125, "0.004", 0),
        (50_000, 600_000, 100, "0.005", 50),
        (600_000, 3_000_000, 75, "0.0065", 950),
        (3_000_000, 12_000_000, 50, "0.01", 11_450),
        (12_000_000, 70_000_000, 25, "0.02", 131_450),
        (70_000_000, 100_000_000, 20, "0.025", 481_450),
        (100_000_000, 230_000_000, 10, "0.05", 2_981_450),
        (230_000_000, 480_000_000, 5, "0.1", 14_481_450),
        (480_000_000, 600_000_000, 4, "0.125", 26_481_450),
        (600_000_000, 800_000_000, 3, "0.15", 41_481_450),
        (800_000_000, 1_200_000_000, 2, "0.25", 121_481_450),
        (1_200_000_000, 1_800_000_000, 1, "0.5", 421_481_450),
    ],
)

"""A seeded book of plausible accounts, for the demo and the pipeline benchmark.

Each account holds 1-4 positions on the given symbols: mostly cross, some isolated, some hedge
accounts with both legs of a symbol. Leverage is 2-20x; wallets hold 1.0-3.5 times the initial
margin, so a fall of a few percent puts the most leveraged longs in margin call and a 12% fall
liquidates some of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from decimal import Decimal

from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, PositionSide

QUANTITY_PLACES = Decimal("0.001")
MONEY_PLACES = Decimal("0.01")


def generate_accounts(
    count: int, mark_prices: Mapping[str, Decimal], seed: int, prefix: str = "acct"
) -> Iterator[Account]:
    """``count`` accounts named ``{prefix}-{n}``, positions opened near the given marks."""
    rng = random.Random(seed)
    symbols = sorted(mark_prices)
    for number in range(count):
        yield _account(f"{prefix}-{number:07d}", symbols, mark_prices, rng)


def _account(
    account_id: str, symbols: list[str], marks: Mapping[str, Decimal], rng: random.Random
) -> Account:
    hedge = rng.random() < 0.1
    chosen = rng.sample(symbols, k=min(len(symbols), rng.randint(1, 4)))
    positions: list[Position] = []
    cross_margin = Decimal(0)
    for symbol in chosen:
        isolated = rng.random() < 0.2
        legs = _legs(symbol, marks[symbol], hedge, isolated, rng)
        positions.extend(legs)
        cross_margin += sum(
            (abs(p.quantity) * p.entry_price / p.leverage for p in legs if not isolated), Decimal(0)
        )
    cushion = Decimal(str(round(rng.uniform(1.0, 3.5), 2)))
    wallet = (cross_margin * cushion + 10).quantize(MONEY_PLACES)
    mode = PositionMode.HEDGE if hedge else PositionMode.ONE_WAY
    return Account(account_id, wallet, tuple(positions), mode)


def _legs(
    symbol: str, mark: Decimal, hedge: bool, isolated: bool, rng: random.Random
) -> list[Position]:
    sides = [PositionSide.LONG, PositionSide.SHORT] if hedge and rng.random() < 0.5 else []
    if hedge and not sides:
        sides = [rng.choice([PositionSide.LONG, PositionSide.SHORT])]
    leverage = rng.choice([2, 3, 5, 10, 10, 20, 20])
    legs = []
    for side in sides or [PositionSide.BOTH]:
        direction = (
            -1
            if side is PositionSide.SHORT or (side is PositionSide.BOTH and rng.random() < 0.3)
            else 1
        )
        notional = Decimal(str(round(rng.lognormvariate(7.5, 1.2), 2)))
        entry = (mark * Decimal(str(round(rng.uniform(0.99, 1.01), 4)))).quantize(Decimal("0.0001"))
        quantity = max((notional / entry).quantize(QUANTITY_PLACES), QUANTITY_PLACES) * direction
        wallet = None
        if isolated:
            wallet = (abs(quantity) * entry / leverage * Decimal("1.1")).quantize(MONEY_PLACES)
        mode = MarginMode.ISOLATED if isolated else MarginMode.CROSS
        legs.append(Position(symbol, quantity, entry, leverage, mode, side, wallet))
    return legs

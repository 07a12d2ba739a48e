"""Hypothesis strategies: random markets and accounts over the real default bracket tables.

Every ``Decimal`` is built from integers (``mantissa × 10^exponent``), so values are exact.
Notionals range from about 10 USDT to about 50 million, so positions cross several tiers;
wallets range from nothing to several times the notional.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal

from hypothesis import strategies as st

from marginwatch.engine.brackets import BracketTable, default_tables
from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, PositionSide

TABLES: Mapping[str, BracketTable] = default_tables()
NAMED_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", "ZECUSDT")
ALL_SYMBOLS = tuple(sorted(TABLES))
MAX_POSITIONS = 6
MAX_NOTIONAL = Decimal(50_000_000)

symbols = st.one_of(st.sampled_from(NAMED_SYMBOLS), st.sampled_from(ALL_SYMBOLS))

# A price with 3-5 significant digits, from 0.001 to 99,999.
prices = st.builds(
    lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent),
    st.integers(1_000, 99_999),
    st.integers(-6, 0),
)


# A positive scale factor, log-spread over [10^low, 10^high): mantissa 1.00-9.99.
def log_factor(low: int, high: int) -> st.SearchStrategy[Decimal]:
    return st.builds(
        lambda mantissa, exponent: Decimal(mantissa).scaleb(exponent - 2),
        st.integers(100, 999),
        st.integers(low, high - 1),
    )


@st.composite
def markets(draw: st.DrawFn, min_symbols: int = 1, max_symbols: int = 6) -> dict[str, Decimal]:
    """Mark price per symbol for a set of distinct symbols."""
    names = draw(st.lists(symbols, min_size=min_symbols, max_size=max_symbols, unique=True))
    return {name: draw(prices) for name in names}


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


@st.composite
def positions(
    draw: st.DrawFn,
    symbol: str,
    mark: Decimal,
    side: PositionSide,
    sign: int,
    mode: MarginMode,
) -> Position:
    """One position of ``symbol``: entry near the mark, notional 10 to ~50M, valid leverage."""
    # Entry between 0.5x and 1.5x the mark, on the mark's price grid.
    exponent = mark.as_tuple().exponent
    assert isinstance(exponent, int)
    grid = Decimal(1).scaleb(exponent)
    factor = draw(st.integers(500, 1_500))
    entry = max(grid, (mark * factor / 1000).quantize(grid, rounding=ROUND_DOWN))
    target = min(draw(log_factor(1, 8)), MAX_NOTIONAL)  # 10 .. 9.99e7, capped at 50M
    decimals = draw(st.integers(0, 6))
    step = Decimal(1).scaleb(-decimals)
    size = max(step, (target / entry).quantize(step, rounding=ROUND_DOWN))
    quantity = sign * size
    table = TABLES[symbol]
    leverage = draw(st.integers(1, table.max_leverage_for(size * entry)))
    wallet = None
    if mode is MarginMode.ISOLATED:
        # From 0.01 % to ~10x of the entry notional, at least one cent.
        wallet = max(Decimal("0.01"), _cents(size * entry * draw(log_factor(-4, 1))))
    return Position(symbol, quantity, entry, leverage, mode, side, wallet)


margin_modes = st.sampled_from([MarginMode.CROSS, MarginMode.ISOLATED])


@st.composite
def accounts(
    draw: st.DrawFn,
    market: Mapping[str, Decimal],
    mode: PositionMode | None = None,
    account_id: str = "acct",
    require_hedged_pair: bool = False,
) -> Account:
    """An account over the symbols of ``market``: 1-6 positions, one-way or hedge."""
    if mode is None:
        mode = draw(st.sampled_from([PositionMode.ONE_WAY, PositionMode.HEDGE]))
    names = list(market)
    chosen = draw(
        st.lists(st.sampled_from(names), min_size=1, max_size=min(len(names), 6), unique=True)
    )
    slots: list[tuple[str, PositionSide, int, MarginMode]] = []
    for index, name in enumerate(chosen):
        margin = draw(margin_modes)
        if mode is PositionMode.ONE_WAY:
            sign = draw(st.sampled_from([1, -1]))
            slots.append((name, PositionSide.BOTH, sign, margin))
            continue
        if require_hedged_pair and index == 0:
            legs = "both"
            margin = MarginMode.CROSS
        else:
            legs = draw(st.sampled_from(["long", "short", "both"]))
        if legs in ("long", "both"):
            slots.append((name, PositionSide.LONG, 1, margin))
        if legs in ("short", "both"):
            slots.append((name, PositionSide.SHORT, -1, margin))
    slots = slots[:MAX_POSITIONS]
    built = tuple(
        draw(positions(name, market[name], side, sign, margin))
        for name, side, sign, margin in slots
    )
    built = tuple(draw(st.permutations(built)))  # input order is arbitrary (shrinks to identity)
    gross = sum((abs(p.quantity) * p.entry_price for p in built), Decimal(0))
    wallet_kind = draw(st.sampled_from(["zero", "tiny", "relative", "huge"]))
    if wallet_kind == "zero":
        wallet = Decimal(0)
    elif wallet_kind == "tiny":
        wallet = Decimal(draw(st.integers(1, 10_000))) / 100
    elif wallet_kind == "relative":
        wallet = max(Decimal("0.01"), _cents(gross * draw(log_factor(-4, 1))))
    else:
        wallet = Decimal(draw(st.integers(1, 10**6))) * 1000
    return Account(account_id, wallet, built, mode)


@st.composite
def market_and_account(
    draw: st.DrawFn,
    mode: PositionMode | None = None,
    require_hedged_pair: bool = False,
) -> tuple[dict[str, Decimal], Account]:
    """A market and one account trading in it."""
    market = draw(markets())
    account = draw(accounts(market, mode=mode, require_hedged_pair=require_hedged_pair))
    return market, account


def moved(market: Mapping[str, Decimal], factors: list[int]) -> dict[str, Decimal]:
    """``market`` with each mark scaled by ``factor / 1000``, on the mark's own price grid."""
    result = {}
    for (name, mark), factor in zip(market.items(), factors, strict=True):
        exponent = mark.as_tuple().exponent
        assert isinstance(exponent, int)
        grid = Decimal(1).scaleb(exponent)
        result[name] = max(grid, (mark * factor / 1000).quantize(grid, rounding=ROUND_DOWN))
    return result


@st.composite
def books(
    draw: st.DrawFn, max_accounts: int = 5
) -> tuple[dict[str, Decimal], list[Account], dict[str, Decimal]]:
    """A market, several accounts sharing its marks (maybe one with no positions), new marks."""
    market = draw(markets(min_symbols=2, max_symbols=6))
    count = draw(st.integers(1, max_accounts))
    accounts_ = [draw(accounts(market, account_id=f"a{n}")) for n in range(count)]
    if draw(st.integers(0, 4)) == 0:
        wallet = Decimal(draw(st.integers(0, 10**6)))
        spot = draw(st.integers(0, len(accounts_)))
        accounts_.insert(spot, Account("empty", wallet, ()))
    factors = draw(st.lists(st.integers(500, 1_500), min_size=len(market), max_size=len(market)))
    return market, accounts_, moved(market, factors)

"""Closing out a liquidated pool at mark: realized PnL, fee, insurance fund (written out)."""

from __future__ import annotations

from decimal import Decimal

from marginwatch.engine.closeout import close_out
from marginwatch.engine.types import Account, MarginMode, Position

D = Decimal
MARKS = {"BTCUSDT": D(44_000), "ETHUSDT": D(2_400)}


def rate(symbol: str) -> Decimal:
    """0.5% on BTCUSDT, 1% elsewhere."""
    return D("0.005") if symbol == "BTCUSDT" else D("0.01")


def test_cross_closeout_with_margin_left_pays_the_fee() -> None:
    """Wallet 10,000; BTC 1 from 45,000 to 44,000: −1,000; fee 44,000 × 0.5% = 220."""
    btc = Position("BTCUSDT", D(1), D(45_000), 20, MarginMode.CROSS)
    result = close_out(Account("a", D(10_000), (btc,)), [btc], MARKS, rate)
    assert result.realized_pnl == D(1) * (D(44_000) - D(45_000))
    assert result.fee_charged == D(44_000) * D("0.005")
    assert result.deficit_covered == 0
    assert result.account_after.cross_wallet_balance == D(10_000) - D(1_000) - D(220)
    assert result.insurance_fund_change == D(220)
    assert result.account_after.positions == ()


def test_cross_closeout_fee_only_from_what_is_left() -> None:
    """Wallet 1,100 − 1,000 leaves 100 < fee 220: the fee charged is 100, the wallet 0."""
    btc = Position("BTCUSDT", D(1), D(45_000), 20, MarginMode.CROSS)
    result = close_out(Account("a", D(1_100), (btc,)), [btc], MARKS, rate)
    assert result.fee_charged == D(100)
    assert result.account_after.cross_wallet_balance == 0
    assert result.insurance_fund_change == D(100)


def test_bankrupt_cross_pool_is_covered_by_the_fund() -> None:
    """Wallet 500 − 1,000 = −500: no fee, the fund pays 500, the wallet ends at 0."""
    btc = Position("BTCUSDT", D(1), D(45_000), 20, MarginMode.CROSS)
    eth = Position("ETHUSDT", D(-1), D(2_400), 20, MarginMode.ISOLATED, isolated_wallet=D(120))
    result = close_out(Account("a", D(500), (btc, eth)), [btc], MARKS, rate)
    assert result.fee_charged == 0
    assert result.deficit_covered == D(500)
    assert result.insurance_fund_change == D(-500)
    assert result.account_after.cross_wallet_balance == 0
    assert result.account_after.positions == (eth,)  # the isolated position is not touched


def test_isolated_closeout_returns_the_rest_to_the_cross_wallet() -> None:
    """Isolated wallet 1,090 − 1,000 = 90; fee 24,000 × 1% = 240 > 90: all 90 to the fund."""
    eth = Position("ETHUSDT", D(10), D(2_500), 25, MarginMode.ISOLATED, isolated_wallet=D(1_090))
    btc = Position("BTCUSDT", D("0.1"), D(44_000), 20, MarginMode.CROSS)
    result = close_out(Account("a", D(300), (btc, eth)), [eth], MARKS, rate)
    assert result.realized_pnl == D(10) * (D(2_400) - D(2_500))
    assert result.fee_charged == D(90)
    assert result.account_after.cross_wallet_balance == D(300)
    assert result.account_after.positions == (btc,)


def test_short_isolated_closeout_with_profit_left() -> None:
    """Short −2 ETH from 2,450 to 2,400: +100; wallet 200 + 100 − fee 48 = 252 to cross."""
    eth = Position("ETHUSDT", D(-2), D(2_450), 25, MarginMode.ISOLATED, isolated_wallet=D(200))
    result = close_out(Account("a", D(0), (eth,)), [eth], MARKS, rate)
    assert result.realized_pnl == D(-2) * (D(2_400) - D(2_450))
    assert result.fee_charged == D(2) * D(2_400) * D("0.01")
    assert result.account_after.cross_wallet_balance == D(200) + D(100) - D(48)


def test_an_isolated_deficit_is_the_funds_not_the_cross_wallets() -> None:
    """Isolated wallet 500 against −1,000: the fund covers 500; the cross wallet keeps 300."""
    eth = Position("ETHUSDT", D(10), D(2_500), 25, MarginMode.ISOLATED, isolated_wallet=D(500))
    btc = Position("BTCUSDT", D("0.1"), D(44_000), 20, MarginMode.CROSS)
    result = close_out(Account("a", D(300), (btc, eth)), [eth], MARKS, rate)
    assert result.realized_pnl == D(10) * (D(2_400) - D(2_500))
    assert result.fee_charged == 0
    assert result.deficit_covered == D(1_000) - D(500)
    assert result.insurance_fund_change == -(D(1_000) - D(500))
    assert result.account_after.cross_wallet_balance == D(300)
    assert result.account_after.positions == (btc,)

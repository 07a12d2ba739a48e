"""Published worked examples (reference §3, §4), reproduced by the exact path."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.exact import AccountReport, evaluate_account
from marginwatch.engine.types import (
    Account,
    MarginMode,
    Position,
    PositionMode,
    PositionSide,
    Status,
    Thresholds,
    Venue,
)
from tests.tables import BTC_2024, BTC_FAQ_ERA, ETH_FAQ_ERA, flat

D = Decimal
CROSS, ISOLATED = MarginMode.CROSS, MarginMode.ISOLATED


def cents(value: Decimal | None) -> Decimal:
    """Round to the cent, as the published figures are."""
    assert value is not None
    return value.quantize(D("0.01"))


def cut(value: Decimal | None, places: int) -> Decimal:
    """Cut toward zero, as Binance's API strings are."""
    assert value is not None
    return value.quantize(D(1).scaleb(-places), rounding=ROUND_DOWN)


def evaluate(
    account: Account,
    marks: dict[str, str],
    tables: list[BracketTable],
    venue: Venue = Venue.BINANCE,
) -> AccountReport:
    """Evaluate one account with default thresholds."""
    return evaluate_account(
        account,
        {symbol: D(price) for symbol, price in marks.items()},
        {table.symbol: table for table in tables},
        Thresholds(),
        venue,
    )


FAQ_ACCOUNT = Account(
    "faq",
    D("1535443.01"),
    (
        Position("ETHUSDT", D("3683.979"), D("1456.84"), 10, CROSS),
        Position("BTCUSDT", D("109.488"), D("32481.98"), 10, CROSS),
    ),
)
FAQ_MARKS = {"ETHUSDT": "1335.18", "BTCUSDT": "31967.27"}


def test_faq_cross_example_maintenance_margins() -> None:
    """MM = notional at mark × MMR − cum, for both FAQ positions."""
    report = evaluate(FAQ_ACCOUNT, FAQ_MARKS, [ETH_FAQ_ERA, BTC_FAQ_ERA])
    eth, btc = report.positions
    assert eth.notional == D("3683.979") * D("1335.18") == D("4918775.08122")
    assert eth.maintenance_margin == D("4918775.08122") * D("0.10") - 135_365
    assert cut(eth.maintenance_margin, 3) == D("356512.508")
    assert btc.notional == D("109.488") * D("31967.27") == D("3500032.45776")
    assert btc.maintenance_margin == D("3500032.45776") * D("0.025") - 16_300
    assert cut(btc.maintenance_margin, 5) == D("71200.81144")


def test_faq_cross_example_liquidation_prices() -> None:
    """ETHUSDT 1,153.26 and BTCUSDT 26,316.89 (Binance liquidation-price FAQ)."""
    report = evaluate(FAQ_ACCOUNT, FAQ_MARKS, [ETH_FAQ_ERA, BTC_FAQ_ERA])
    eth, btc = report.positions
    # ETH: (WB − TMM1 + UPNL1 + cum − Q·EP) / (Q·MMR − Q), TMM1/UPNL1 from BTC at its mark.
    eth_expected = (
        D("1535443.01")
        - D("71200.811444")
        + D("-56354.56848")
        + 135_365
        - D("3683.979") * D("1456.84")
    ) / (D("3683.979") * D("0.10") - D("3683.979"))
    assert eth.liquidation_price == eth_expected
    assert cents(eth.liquidation_price) == D("1153.26")
    btc_expected = (
        D("1535443.01")
        - D("356512.508122")
        + D("-448192.88514")
        + 16_300
        - D("109.488") * D("32481.98")
    ) / (D("109.488") * D("0.025") - D("109.488"))
    assert btc.liquidation_price == btc_expected
    assert cents(btc.liquidation_price) == D("26316.89")


def test_faq_cross_example_account_margin_ratio() -> None:
    """Σ MM / (WB + Σ UPNL) = 427,713.32 / 1,030,895.56 = 41.49%."""
    cross = evaluate(FAQ_ACCOUNT, FAQ_MARKS, [ETH_FAQ_ERA, BTC_FAQ_ERA]).cross
    assert cross.unrealized_pnl == D("-448192.88514") + D("-56354.56848")
    assert cross.margin_balance == D("1535443.01") - D("504547.45362")
    assert cross.maintenance_margin == D("356512.508122") + D("71200.811444")
    assert cross.margin_ratio is not None
    assert (cross.margin_ratio * 100).quantize(D("0.01")) == D("41.49")
    assert cross.status is Status.OK


def test_margin_call_event_example() -> None:
    """MARGIN_CALL doc: mm = 1.327 × 187.17127 × 0.65% = 1.614445, ratio ≈ 80.6%."""
    account = Account(
        "mc",
        D("3.16812045"),
        (Position("ETHUSDT", D("1.327"), D("188.05"), 20, CROSS, PositionSide.LONG),),
        PositionMode.HEDGE,
    )
    report = evaluate(account, {"ETHUSDT": "187.17127"}, [flat("ETHUSDT", "0.0065")])
    (position,) = report.positions
    assert position.maintenance_margin == D("1.327") * D("187.17127") * D("0.0065")
    assert cut(position.maintenance_margin, 6) == D("1.614445")
    assert cut(position.unrealized_pnl, 6) == D("-1.166074")
    assert report.cross.margin_ratio is not None
    assert cut(report.cross.margin_ratio, 3) == D("0.806")
    assert report.cross.status is Status.MARGIN_CALL


def test_position_risk_v3_ada_example() -> None:
    """positionRisk v3 ADAUSDT: notional, uPnL, IM at 20x and MM at 0.65% reproduce."""
    account = Account("ada", D(100), (Position("ADAUSDT", D(30), D("0.385"), 20, CROSS),))
    report = evaluate(account, {"ADAUSDT": "0.41047590"}, [flat("ADAUSDT", "0.0065", 75)])
    (ada,) = report.positions
    assert ada.notional == D(30) * D("0.4104759") == D("12.31427700")
    assert ada.unrealized_pnl == D(30) * (D("0.4104759") - D("0.385")) == D("0.76427700")
    assert ada.initial_margin == D("12.314277") / 20 == D("0.61571385")
    assert cut(ada.maintenance_margin, 8) == D("0.08004280")
    assert ada.liquidation_price is None  # the example shows "0": no liquidation price


def test_position_risk_v3_comp_short_example() -> None:
    """positionRisk v3 COMPUSDT short: IM 49.72023376 / 20 is cut to 2.48601168."""
    account = Account("comp", D(100), (Position("COMPUSDT", D(-1), D("70.92841"), 20, CROSS),))
    report = evaluate(account, {"COMPUSDT": "49.72023376"}, [flat("COMPUSDT", "0.01", 50)])
    (comp,) = report.positions
    assert comp.unrealized_pnl == D(-1) * (D("49.72023376") - D("70.92841")) == D("21.20817624")
    assert cut(comp.initial_margin, 8) == D("2.48601168")
    assert cut(comp.maintenance_margin, 8) == D("0.49720233")


def test_position_risk_v2_hedge_long_example() -> None:
    """positionRisk v2 BTCUSDT LONG: uPnL −1.06214947, notional 21.12305052."""
    long_leg = Position("BTCUSDT", D("0.001"), D("22185.2"), 4, CROSS, PositionSide.LONG)
    account = Account("v2", D(1000), (long_leg,), PositionMode.HEDGE)
    report = evaluate(account, {"BTCUSDT": "21123.05052574"}, [BTC_2024])
    (btc,) = report.positions
    assert cut(btc.unrealized_pnl, 8) == D("-1.06214947")
    assert cut(btc.notional, 8) == D("21.12305052")


GUIDE_CASES = [
    # side, leverage, isolated wallet, MMR, Binance LP (MM at LP), Bybit LP (MM at entry), BP
    (1, 10, "1000", "0.01", "45454.55", "45500", "45000"),
    (1, 25, "400", "0.004", "48192.77", "48200", "48000"),
    (-1, 10, "1000", "0.01", "54455.45", "54500", "55000"),
    (-1, 25, "400", "0.004", "51792.83", "51800", "52000"),
]


@pytest.mark.parametrize(
    ("side", "leverage", "wallet", "rate", "binance", "bybit", "bankruptcy"), GUIDE_CASES
)
def test_guide_isolated_examples_under_both_venues(
    side: int, leverage: int, wallet: str, rate: str, binance: str, bybit: str, bankruptcy: str
) -> None:
    """Isolated 0.2 BTC at 50,000: the guides' figures under bybit, Binance's own under binance."""
    position = Position(
        "BTCUSDT", D("0.2") * side, D(50_000), leverage, ISOLATED, isolated_wallet=D(wallet)
    )
    account = Account("guide", D(0), (position,))
    tables = [flat("BTCUSDT", rate)]
    for venue, expected in ((Venue.BINANCE, binance), (Venue.BYBIT, bybit)):
        (report,) = evaluate(account, {"BTCUSDT": "50000"}, tables, venue).positions
        assert cents(report.liquidation_price) == D(expected)
        assert report.bankruptcy_price == D(bankruptcy)


def test_binance_isolated_long_formula_written_out() -> None:
    """Long: LP = (Q·EP − WB − cum) / (Q·(1 − MMR)) = (10,000 − 1,000) / (0.2 × 0.99)."""
    position = Position("BTCUSDT", D("0.2"), D(50_000), 10, ISOLATED, isolated_wallet=D(1000))
    account = Account("long", D(0), (position,))
    (report,) = evaluate(account, {"BTCUSDT": "50000"}, [flat("BTCUSDT", "0.01")]).positions
    assert report.liquidation_price == (D(10_000) - D(1_000)) / (D("0.2") * D("0.99"))


def test_seed_with_real_2024_table_is_tier_one() -> None:
    """With the 2024-10 BTCUSDT table the 10x seed is in tier 1 (0.4%): LP 45,180.72."""
    position = Position("BTCUSDT", D("0.2"), D(50_000), 10, ISOLATED, isolated_wallet=D(1000))
    account = Account("seed", D(0), (position,))
    (report,) = evaluate(account, {"BTCUSDT": "50000"}, [BTC_2024]).positions
    assert report.liquidation_price == D(9_000) / (D("0.2") * D("0.996"))
    assert cents(report.liquidation_price) == D("45180.72")


def test_tier_at_liquidation_price_differs_from_tier_at_entry() -> None:
    """1 BTC at 52,000 (tier 2 at entry) liquidates at 49,598.39, inside tier 1."""
    position = Position("BTCUSDT", D(1), D(52_000), 20, ISOLATED, isolated_wallet=D(2_600))
    account = Account("tier", D(0), (position,))
    (report,) = evaluate(account, {"BTCUSDT": "52000"}, [BTC_2024]).positions
    assert report.bracket.maintenance_margin_rate == D("0.005")  # at the mark: tier 2
    tier_one = (D(52_000) - D(2_600) - 0) / (1 * (1 - D("0.004")))
    entry_tier = (D(52_000) - D(2_600) - 50) / (1 * (1 - D("0.005")))
    assert report.liquidation_price == tier_one
    assert cents(tier_one) == D("49598.39")
    assert cents(entry_tier) == D("49597.99")  # the entry tier's answer is off by 0.40
    assert tier_one < 50_000  # tier 1 holds the notional 1 × LP


def test_cross_hedge_legs_share_one_liquidation_price() -> None:
    """Long 1 @ 50,000 + short 0.5 @ 52,000, WB 10,000, MMR 0.4%: one price for both legs."""
    legs = (
        Position("BTCUSDT", D(1), D(50_000), 20, CROSS, PositionSide.LONG),
        Position("BTCUSDT", D("-0.5"), D(52_000), 20, CROSS, PositionSide.SHORT),
    )
    account = Account("hedge", D(10_000), legs, PositionMode.HEDGE)
    report = evaluate(account, {"BTCUSDT": "50000"}, [flat("BTCUSDT", "0.004")])
    long_leg, short_leg = report.positions
    # (WB + Σcum − Σ Q·EP) / (Σ |Q|·MMR − Σ Q) = (10,000 − 24,000) / (0.006 − 0.5)
    expected = (D(10_000) - (D(50_000) - D(26_000))) / (D("1.5") * D("0.004") - D("0.5"))
    assert long_leg.liquidation_price == short_leg.liquidation_price == expected
    at_price = evaluate(account, {"BTCUSDT": str(expected)}, [flat("BTCUSDT", "0.004")])
    assert at_price.cross.margin_ratio is not None
    assert abs(at_price.cross.margin_ratio - 1) < D("1e-20")


def test_one_x_long_has_no_liquidation_price() -> None:
    """A 1x isolated long cannot be liquidated at a positive price."""
    position = Position("BTCUSDT", D(1), D(50_000), 1, ISOLATED, isolated_wallet=D(50_000))
    account = Account("onex", D(0), (position,))
    (report,) = evaluate(account, {"BTCUSDT": "50000"}, [BTC_2024]).positions
    assert report.liquidation_price is None
    assert report.bankruptcy_price is None


def test_negative_margin_balance_is_liquidation_without_ratio() -> None:
    """Margin balance <= 0: status liquidation, ratio undefined (null)."""
    position = Position("BTCUSDT", D(1), D(50_000), 20, CROSS)
    account = Account("broke", D(1_000), (position,))
    report = evaluate(account, {"BTCUSDT": "48000"}, [BTC_2024])
    assert report.cross.margin_balance == D(1_000) + 1 * (D(48_000) - D(50_000))
    assert report.cross.margin_ratio is None
    assert report.cross.status is Status.LIQUIDATION


@pytest.mark.parametrize(
    ("mark", "status"),
    [
        ("49310", Status.OK),
        ("49062", Status.WARNING),
        ("49018", Status.MARGIN_CALL),
        ("48990", Status.LIQUIDATION),
    ],
)
def test_status_thresholds(mark: str, status: Status) -> None:
    """ok < 0.7 <= warning < 0.8 <= margin call < 1 <= liquidation."""
    position = Position("BTCUSDT", D(1), D(50_000), 20, CROSS)
    account = Account("status", D(1_200), (position,))
    report = evaluate(account, {"BTCUSDT": mark}, [BTC_2024])
    # MR = (MP × 0.4%) / (1,200 + MP − 50,000)
    expected = D(mark) * D("0.004") / (D(1_200) + D(mark) - D(50_000))
    assert report.cross.margin_ratio == expected
    assert report.cross.status is status

"""Who a stress scenario deleverages when its deficit exhausts the fund: the tiny book of
tests/stress_book.py with four counterparties, the arithmetic written out."""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from marginwatch.engine.batch import BatchResult, BracketArrays, columns_of
from marginwatch.engine.scenarios import Scenario, Shock, moves, shocked_marks
from marginwatch.engine.stress import ExactPath, ScenarioOutcome, run_scenario, stress_book
from marginwatch.engine.stress_adl import Deleverage, of_units, quantity_units
from marginwatch.engine.types import Account, PositionSide, Thresholds
from tests.stress_book import BOOK, MARKS, TABLES, cross, isolated

D = Decimal
BTC_CRASH = Scenario.of([Shock("BTCUSDT", D("-0.20"))])
# At BTC 40,000 and ETH 3,000 (MM 1% of the notional), none of them liquidated:
# gus: short 0.5 BTC from 50,000 on 5,000: UPNL 5,000, MM 200, MB 10,000:
#      5,000 / 5,000 × 200 / 10,000 = 0.02
# hal: isolated short 0.4 BTC from 45,000 on 2,000: UPNL 2,000, MM 160, MB 4,000:
#      2,000 / 2,000 × 160 / 4,000 = 0.04
# ivy: short 1 BTC from 38,000 on 10,000: UPNL −2,000: 0
# jan: long 4 ETH from 2,500 on 1,000: UPNL 2,000, MM 120, MB 3,000: 2,000 / 1,000 × 120 /
#      3,000 = 0.08
COUNTERPARTIES = (
    Account("gus", D(5_000), (cross("BTCUSDT", "-0.5", 50_000),)),
    Account("hal", D(0), (isolated("BTCUSDT", "-0.4", 45_000, "2000"),)),
    Account("ivy", D(10_000), (cross("BTCUSDT", "-1", 38_000),)),
    Account("jan", D(1_000), (cross("ETHUSDT", "4", 2_500),)),
)


def crash(fund: Decimal, top: int = 10, symbols: int = 10) -> ScenarioOutcome:
    """BTCUSDT −20% over the tiny book and the counterparties, with ``fund``."""
    accounts = [*BOOK, *COUNTERPARTIES]
    brackets = BracketArrays.from_tables(TABLES, sorted(TABLES))
    book = stress_book(columns_of(accounts, brackets), brackets)
    exact = ExactPath(lambda n: accounts[n], TABLES, Thresholds(), lambda _symbol: D("0.0125"))
    by_symbol = moves(BTC_CRASH, MARKS, None)
    out = BatchResult.allocate(book.book)
    return run_scenario(book, exact, BTC_CRASH, by_symbol, shocked_marks(MARKS, by_symbol), 10,
                        out, None, Deleverage(fund, top, symbols))  # fmt: skip


def test_a_fund_exhausted_deleverages_the_best_ranked_counterparties() -> None:
    """The deficit is 1,400 (alice's cross 1,000, erin's isolated BTC 400; tests/test_stress.py)
    and the fund 700: (1,400 − 700) / 1,400 = 1/2 of each bankrupt quantity is deleveraged.

    * BTCUSDT LONG: alice's 1 and erin's 0.1, 0.55 to deleverage; the BTC shorts, hal (0.04),
      gus (0.02), ivy (0): quantiles 10 // 3 = 3, 5 // 3 = 1 and 0; hal gives his 0.4, gus
      the 0.15 left: filled by 2.
    * ETHUSDT SHORT: alice's 10, 5 to deleverage; the ETH longs of pools not liquidated: jan
      alone (erin's cross long is liquidated), quantile 0, gives his 4: 1 unfilled.
    """
    outcome = crash(D(700))
    assert outcome.deficit == D(1_400)
    btc, eth = outcome.deleveraged
    assert (btc.symbol, btc.bankrupt_side) == ("BTCUSDT", PositionSide.LONG)
    assert (btc.bankrupt_quantity, btc.quantity) == (D("1.1"), D("0.55"))
    assert (btc.counterparties, btc.filled_by, btc.unfilled) == (3, 2, 0)
    shown = [(c.account.account_id, c.leverage_pnl, c.quantile, c.taken) for c in btc.top]
    assert shown == [("hal", D("0.04"), 3, D("0.4")), ("gus", D("0.02"), 1, D("0.15")),
                     ("ivy", D(0), 0, D(0))]  # fmt: skip
    assert (eth.symbol, eth.bankrupt_side) == ("ETHUSDT", PositionSide.SHORT)
    assert (eth.bankrupt_quantity, eth.quantity) == (D(10), D(5))
    assert (eth.counterparties, eth.filled_by, eth.unfilled) == (1, 1, D(1))
    [jan] = eth.top
    assert (jan.account.account_id, jan.leverage_pnl, jan.quantile, jan.taken) == (
        "jan", D("0.08"), 0, D(4))  # fmt: skip


def test_only_the_top_counterparties_are_shown() -> None:
    """``top`` 1: hal alone is shown; the counts are over every counterparty."""
    btc, _eth = crash(D(700), top=1).deleveraged
    assert [c.account.account_id for c in btc.top] == ["hal"]
    assert (btc.counterparties, btc.filled_by) == (3, 2)


def test_counterparties_are_shown_for_the_largest_bankrupt_notional_only() -> None:
    """One symbol and side detailed: BTCUSDT LONG's bankrupt 1.1 × 40,000 = 44,000 USDT
    before ETHUSDT SHORT's 10 × 3,000 = 30,000; ETH is still listed, its counts whole."""
    btc, eth = crash(D(700), symbols=1).deleveraged
    assert (btc.detailed, [c.account.account_id for c in btc.top]) == (True, ["hal", "gus", "ivy"])
    assert (eth.detailed, eth.top) == (False, ())
    assert (eth.quantity, eth.counterparties, eth.filled_by, eth.unfilled) == (D(5), 1, 1, D(1))


def test_a_fund_that_covers_the_deficit_deleverages_nothing() -> None:
    """A fund of 1,400.01 covers the deficit: no ranking. At exactly 1,400 the fund is
    exhausted (left at 0) but nothing remains to deleverage: quantities 0, filled by none."""
    assert crash(D("1400.01")).deleveraged == ()
    btc, eth = crash(D(1_400)).deleveraged
    assert (btc.quantity, btc.filled_by, eth.quantity, eth.filled_by) == (0, 0, 0, 0)
    assert [c.taken for c in btc.top] == [0, 0, 0]


def test_a_negative_fund_counts_as_none() -> None:
    """A fund of −100 (the partitions' ledgers may sum below 0) takes nothing: the whole
    bankrupt quantity, 1.1 BTC, is deleveraged: hal 0.4, gus 0.5, ivy 0.2."""
    btc, _eth = crash(D(-100)).deleveraged
    assert btc.quantity == D("1.1")
    assert [c.taken for c in btc.top] == [D("0.4"), D("0.5"), D("0.2")]
    assert btc.filled_by == 3


def test_quantities_are_summed_exactly() -> None:
    """33,594,839.053 + 4,384,393.972 = 37,979,233.025, which the float sum misses (to 8
    decimals it is 37,979,233.02500001); in units of 10⁻⁸ the sum is exact."""
    quantities = np.array([33_594_839.053, -4_384_393.972])
    assert Decimal(float(np.abs(quantities).sum())).quantize(D("1e-8")) != D("37979233.025")
    assert of_units(int(quantity_units(quantities).sum())) == D("37979233.025")
    assert quantity_units(np.array([0.29]))[0] == 29_000_000  # 0.29 × 1e8 is 28,999,999.99…

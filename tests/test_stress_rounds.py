"""Second rounds of a stress scenario: the price impact of each round's liquidations moves the
marks, and the scenario runs again until nothing more liquidates, worked out on the tiny book
of ``tests/stress_book.py``."""

from __future__ import annotations

from decimal import Decimal

from marginwatch.engine.batch import BatchResult, BracketArrays, columns_of
from marginwatch.engine.impact import Impact, ImpactModel, impacted_moves
from marginwatch.engine.scenarios import ALL, Scenario, Shock, moves, shocked_marks
from marginwatch.engine.stress import (
    Cascade,
    ExactPath,
    ScenarioOutcome,
    run_scenario,
    stress_book,
)
from marginwatch.engine.types import Thresholds
from tests.stress_book import BOOK, MARKS, TABLES

D = Decimal
BTC_CRASH = Scenario.of([Shock("BTCUSDT", D("-0.20"))])


def cascade(impacts: dict[str, Impact], max_rounds: int = 20) -> ScenarioOutcome:
    """BTCUSDT −20% over the tiny book, its rounds driven by ``impacts``."""
    brackets = BracketArrays.from_tables(TABLES, sorted(TABLES))
    book = stress_book(columns_of(BOOK, brackets), brackets)
    exact = ExactPath(lambda n: BOOK[n], TABLES, Thresholds(), lambda _symbol: D("0.0125"))
    by_symbol = moves(BTC_CRASH, MARKS, None)
    out = BatchResult.allocate(book.book)
    rounds = Cascade(ImpactModel(impacts), max_rounds)
    return run_scenario(book, exact, BTC_CRASH, by_symbol, shocked_marks(MARKS, by_symbol), 10,
                        out, rounds)  # fmt: skip


def test_a_sale_of_the_depth_moves_the_mark_by_the_move() -> None:
    """``(1 − m)^(S/D)``: a sale of D is ×0.9 at m = 10%; a purchase of D is ×1/0.9; a sale
    of 2D in two rounds of D equals one of 2D (the exponents add)."""
    impact = Impact(D("0.10"), D(1_000_000))
    assert impact.factor(D(1_000_000)) == D("0.9")
    assert impact.factor(D(-1_000_000)) == D(1) / D("0.9")
    assert impact.factor(D(1_000_000)) ** 2 == impact.factor(D(2_000_000))
    assert impact.factor(D(0)) == 1


def test_a_symbol_takes_its_own_impact_else_the_stars_else_none() -> None:
    """BTCUSDT its own 10%; ETHUSDT the ``*`` 20%; without ``*`` ETHUSDT does not move."""
    btc, star = Impact(D("0.10"), D(100)), Impact(D("0.20"), D(100))
    sold = {"BTCUSDT": D(100), "ETHUSDT": D(100)}
    assert impacted_moves(ImpactModel({"BTCUSDT": btc, ALL: star}), sold) == {
        "BTCUSDT": D("-0.10"),
        "ETHUSDT": D("-0.20"),
    }
    assert impacted_moves(ImpactModel({"BTCUSDT": btc}), sold) == {"BTCUSDT": D("-0.10")}


def test_the_crash_liquidates_bob_in_the_second_round() -> None:
    """Round 1 at BTCUSDT 40,000 (tests/test_stress.py): alice, dave and erin's two pools, net
    BTC sale (1 + 0.2 + 0.1) × 40,000 = 52,000. BTCUSDT 10% per 52,000: ×0.9 → 36,000.

    Round 2: bob's isolated 0.5 BTC, UPNL 0.5 × (36,000 − 50,000) = −7,000, MB 5,225 −
    7,000 = −1,775: liquidated, deficit 1,775; sale 0.5 × 36,000 = 18,000. Round 3 at
    36,000 × 0.9^(18,000/52,000) liquidates nothing (carol holds ETH, unmoved).

    In all: 5 pools of 4 accounts; BTC notional 52,000 + 18,000 = 70,000, ETH 36,000;
    deficit 1,400 + 1,775 = 3,175; nobody left at margin call."""
    outcome = cascade({"BTCUSDT": Impact(D("0.10"), D(52_000))})
    first, second = outcome.rounds
    assert (first.number, first.moves, first.pools_liquidated) == (1, {}, 4)
    assert first.net_sold == {"BTCUSDT": D(52_000), "ETHUSDT": D(-24_000)}  # −30,000 + 6,000
    assert (first.deficit, second.deficit) == (D(1_400), D(1_775))
    assert second.moves == {"BTCUSDT": D("-0.1")}
    assert second.marks["BTCUSDT"] == D(36_000)
    assert (second.pools_liquidated, second.net_sold) == (1, {"BTCUSDT": D(18_000)})
    assert outcome.converged
    assert (outcome.pools_liquidated, outcome.accounts_liquidated) == (5, 4)
    assert outcome.pools_margin_call == 0
    assert outcome.liquidated_notional == {"BTCUSDT": D(70_000), "ETHUSDT": D(36_000)}
    assert outcome.deficit == D(3_175)
    bob = outcome.contributors[0]
    assert (bob.account.account_id, bob.deficit, bob.notional) == ("bob", D(1_775), D(18_000))


def test_liquidated_shorts_buy_the_mark_up() -> None:
    """``*`` 10% per 24,000: round 1's net ETH purchase of 24,000 lifts ETHUSDT to 3,000 / 0.9
    = 3,333.33…; carol's isolated short of 2 ETH on 300: UPNL −2 × 333.33… = −666.66…, MB
    −366.66…: liquidated in round 2 with a deficit of 366.67 (to the cent, exactly in her
    contributor entry). BTCUSDT falls to 40,000 × 0.9^(52,000/24,000), taking bob too."""
    outcome = cascade({ALL: Impact(D("0.10"), D(24_000))})
    second = outcome.rounds[1]
    eth = D(3_000) / D("0.9")
    assert second.marks["ETHUSDT"] == eth
    assert second.marks["BTCUSDT"] == D(40_000) * D("0.9") ** (D(52_000) / D(24_000))
    assert second.pools_liquidated == 2
    carol = next(c for c in outcome.contributors if c.account.account_id == "carol")
    assert carol.deficit == -(D(300) - 2 * (eth - D(3_000)))


def test_the_rounds_stop_at_the_most_allowed() -> None:
    """One round allowed: bob is left at margin call (MR 0.89 at 40,000), and the outcome says
    it did not converge."""
    outcome = cascade({"BTCUSDT": Impact(D("0.10"), D(52_000))}, max_rounds=1)
    assert len(outcome.rounds) == 1
    assert not outcome.converged
    assert (outcome.pools_liquidated, outcome.pools_margin_call) == (4, 1)
    assert outcome.deficit == D(1_400)

"""Stress scenarios over a book: shocked marks, the screen's aggregates and the largest
contributors, with the arithmetic written out on a tiny book."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import numpy as np
import pytest

from marginwatch.engine.batch import BatchResult, BracketArrays, columns_of
from marginwatch.engine.scenarios import (
    ALL,
    Betas,
    Scenario,
    ScenarioError,
    Shock,
    grid,
    move_of,
    moves,
    percent,
    shocked_marks,
)
from marginwatch.engine.stress import (
    ExactPath,
    ScenarioOutcome,
    fund_exhausted,
    run_scenario,
    stress_book,
)
from marginwatch.engine.types import Account, Position, Status, Thresholds
from tests.stress_book import BOOK, ISOLATED, MARKS, TABLES

D = Decimal


def stress(
    accounts: Sequence[Account],
    scenario: Scenario,
    betas: Betas | None = None,
    top: int = 10,
    marks: Mapping[str, Decimal] = MARKS,
) -> ScenarioOutcome:
    """One scenario over ``accounts`` through the batch path, as the command runs it."""
    brackets = BracketArrays.from_tables(TABLES, sorted(TABLES))
    book = stress_book(columns_of(accounts, brackets), brackets)
    exact = ExactPath(lambda n: accounts[n], TABLES, Thresholds(), lambda _symbol: D("0.0125"))
    by_symbol = moves(scenario, marks, betas)
    shocked = shocked_marks(marks, by_symbol)
    out = BatchResult.allocate(book.book)
    return run_scenario(book, exact, scenario, by_symbol, shocked, top, out)


def named(outcome: ScenarioOutcome) -> list[tuple[str, str, Decimal]]:
    """The contributors as (account, pool kind, deficit)."""
    return [
        (c.account.account_id, "isolated" if c.isolated else "cross", c.deficit)
        for c in outcome.contributors
    ]


def test_a_btc_crash_on_a_tiny_book() -> None:
    """BTCUSDT −20%: its mark 50,000 → 40,000; ETHUSDT stays at 3,000. MM is 1% of notional.

    * alice (cross): UPNL 1 × (40,000 − 50,000) = −10,000 and −10 × (3,000 − 3,000) = 0;
      MB = 9,000 − 10,000 = −1,000 ≤ 0: liquidation, deficit 1,000.
    * bob (isolated): UPNL 0.5 × −10,000 = −5,000; MB = 5,225 − 5,000 = 225;
      MM = 1% × 20,000 = 200; MR = 200 / 225 = 0.89: margin call. His empty cross pool is ok.
    * carol (isolated, ETH): unmoved, MB 300, MM 60, MR 0.2: ok.
    * dave (cross): UPNL 0.2 × −10,000 = −2,000; MB = 2,050 − 2,000 = 50; MM = 1% × 8,000 =
      80; MR = 1.6: liquidation, and no deficit (MB > 0).
    * erin: isolated UPNL 0.1 × −10,000 = −1,000, MB = 600 − 1,000 = −400: deficit 400; her
      cross ETH long is unmoved, MB 50 < MM 60: liquidation, no deficit.

    Pools at liquidation: alice's, dave's and erin's two (4), of 3 accounts; at margin call:
    bob's (1). Liquidated notional: BTC (1 + 0.2 + 0.1) × 40,000 = 52,000; ETH alice's 10 and
    erin's 2 × 3,000 = 36,000. Deficit 1,000 + 400 = 1,400.
    """
    outcome = stress(BOOK, Scenario.of([Shock("BTCUSDT", D("-0.20"))]))
    assert outcome.scenario.name == "BTCUSDT:-20%"
    assert outcome.moves == {"BTCUSDT": D("-0.20"), "ETHUSDT": 0}
    assert (outcome.pools_margin_call, outcome.pools_liquidated) == (1, 4)
    assert outcome.accounts_liquidated == 3
    assert outcome.liquidated_notional == {"BTCUSDT": D(52_000), "ETHUSDT": D(36_000)}
    assert outcome.deficit == D(1_400)
    assert named(outcome) == [("alice", "cross", D(1_000)), ("erin", "isolated", D(400))]
    alice = outcome.contributors[0]
    assert alice.report.margin_balance == D(-1_000)
    assert alice.report.status is Status.LIQUIDATION
    assert alice.notional == D(70_000)  # 40,000 + 30,000: both legs of the pool


def test_a_symbols_own_shock_overrides_the_star() -> None:
    """BTCUSDT −20% and ``*`` −10%: BTC 40,000 as before, ETH 3,000 → 2,700.

    * alice: UPNL −10,000 + (−10 × (2,700 − 3,000) = +3,000); MB = 9,000 − 7,000 = 2,000;
      MM = 400 + 270 = 670; MR = 0.335: ok now.
    * carol: UPNL −2 × −300 = +600, MB 900: ok. bob and dave hold BTC only: as before.
    * erin: her isolated BTC as before (deficit 400); cross UPNL 2 × −300 = −600, MB = 50 −
      600 = −550: deficit 550.

    Pools at liquidation: dave's and erin's two (3, of 2 accounts); deficit 400 + 550 = 950;
    liquidated notional BTC (0.2 + 0.1) × 40,000 = 12,000, ETH 2 × 2,700 = 5,400.
    """
    scenario = Scenario.of([Shock("BTCUSDT", D("-0.20")), Shock(ALL, D("-0.10"))])
    outcome = stress(BOOK, scenario)
    assert scenario.name == "BTCUSDT:-20% *:-10%"
    assert outcome.moves == {"BTCUSDT": D("-0.20"), "ETHUSDT": D("-0.10")}
    assert (outcome.pools_margin_call, outcome.pools_liquidated) == (1, 3)
    assert outcome.accounts_liquidated == 2
    assert outcome.liquidated_notional == {"BTCUSDT": D(12_000), "ETHUSDT": D(5_400)}
    assert outcome.deficit == D(950)
    everything = stress(BOOK, Scenario.of([Shock(ALL, D("-0.20"))]))
    assert everything.moves == {"BTCUSDT": D("-0.20"), "ETHUSDT": D("-0.20")}
    # ETH at 2,400 too: alice's short gains 6,000 (MB 5,000), erin's cross long loses 1,200.
    assert everything.deficit == D(400 + 1_150)
    assert named(everything) == [("erin", "cross", D(1_150)), ("erin", "isolated", D(400))]


def test_the_deficit_beyond_the_contributors_comes_from_the_screen() -> None:
    """With one contributor shown, alice's 1,000 is exact and erin's 400 comes from the
    screen, to the cent: 1,400.00 all the same."""
    outcome = stress(BOOK, Scenario.of([Shock("BTCUSDT", D("-0.20"))]), top=1)
    assert named(outcome) == [("alice", "cross", D(1_000))]
    assert outcome.deficit == D("1400.00")


def test_a_pool_the_floats_misjudge_is_decided_exactly() -> None:
    """An isolated long of 0.7 BTC at 43,210.7 on 2,527.32368; BTC 50,000.3 −20% = 40,000.24:
    UPNL 0.7 × (40,000.24 − 43,210.7) = −2,247.322; MB = 280.00168 = MM (1% × 28,000.168):
    MR is exactly 1, liquidation. In floats MM − MB is −8e-13 (a margin call): the screen flags
    the pool uncertain and the exact path decides."""
    account = Account("frank", D(0), (
        Position("BTCUSDT", D("0.7"), D("43210.7"), 5, ISOLATED, isolated_wallet=D("2527.32368")),
    ))  # fmt: skip
    marks = {"BTCUSDT": D("50000.3"), "ETHUSDT": D(3_000)}
    outcome = stress([account], Scenario.of([Shock(ALL, D("-0.20"))]), marks=marks)
    assert (outcome.pools_liquidated, outcome.pools_margin_call) == (1, 0)
    assert outcome.deficit == 0
    assert outcome.contributors == ()


def test_the_grid_is_one_star_scenario_per_step() -> None:
    """−30% to 30% by 5%: 13 scenarios, each ``*`` at its step, the ends included."""
    scenarios = grid(D("-0.30"), D("0.30"), D("0.05"))
    assert len(scenarios) == 13
    assert [s.name for s in scenarios] == [
        "*:-30%", "*:-25%", "*:-20%", "*:-15%", "*:-10%", "*:-5%", "*:0%",
        "*:+5%", "*:+10%", "*:+15%", "*:+20%", "*:+25%", "*:+30%",
    ]  # fmt: skip
    assert [s.shocks for s in scenarios[:2]] == [{ALL: D("-0.30")}, {ALL: D("-0.25")}]
    assert len(grid(D("-0.30"), D("0.30"), D("0.25"))) == 3  # −30%, −5%, +20%


def test_percentages_are_written_signed_without_trailing_zeros() -> None:
    assert [percent(D(m)) for m in ("-0.20", "0.050", "0", "-0.125")] == [
        "-20%",
        "+5%",
        "0%",
        "-12.5%",
    ]


def test_betas_move_symbols_with_the_base() -> None:
    """Precedence: a symbol's own shock, else beta × the base's move, else ``*``, else 0."""
    betas = Betas("BTCUSDT", {"ETHUSDT": D("1.5"), "SOLUSDT": D(2), "BTCUSDT": D(1)})
    scenario = Scenario.of([Shock("BTCUSDT", D("-0.20")), Shock("SOLUSDT", D("-0.05"))])
    assert move_of(scenario, "BTCUSDT", betas) == D("-0.20")  # the base: its own shock
    assert move_of(scenario, "ETHUSDT", betas) == D("-0.30")  # 1.5 × −20%
    assert move_of(scenario, "SOLUSDT", betas) == D("-0.05")  # its own shock wins
    assert move_of(scenario, "XRPUSDT", betas) == 0  # no beta, no ``*``: unmoved
    star = Scenario.of([Shock(ALL, D("-0.10"))])
    assert move_of(star, "ETHUSDT", betas) == D("-0.15")  # the base moves with ``*``
    assert move_of(star, "XRPUSDT", betas) == D("-0.10")
    assert move_of(star, "ETHUSDT", None) == D("-0.10")
    own_beta = Betas("BTCUSDT", {"BTCUSDT": D(2)})
    assert move_of(star, "BTCUSDT", own_beta) == D("-0.10")  # never scaled by its own beta


@pytest.mark.parametrize(("beta", "move"), [("6", "-120%"), ("5", "-100%")])
def test_a_beta_that_takes_a_mark_to_zero_is_refused(beta: str, move: str) -> None:
    """Beta 6 on a −20% base is −120%, beta 5 −100%: no positive mark."""
    betas = Betas("BTCUSDT", {"ETHUSDT": D(beta)})
    scenario = Scenario.of([Shock("BTCUSDT", D("-0.20"))])
    expected = rf"ETHUSDT would move {move} \(beta {beta} × BTCUSDT -20%\)"
    with pytest.raises(ScenarioError, match=expected):
        moves(scenario, ["BTCUSDT", "ETHUSDT"], betas)
    assert moves(scenario, ["ETHUSDT"], Betas("BTCUSDT", {"ETHUSDT": D("4.99")}))


def test_shocked_marks_multiply_by_one_plus_the_move() -> None:
    """MP' = MP × (1 + move): 50,000 × 0.8 and 3,000 × 1.05; a symbol without a move stays."""
    by_symbol = {"BTCUSDT": D("-0.2"), "ETHUSDT": D("0.05")}
    assert shocked_marks(MARKS | {"SOLUSDT": D(150)}, by_symbol) == {
        "BTCUSDT": D(40_000), "ETHUSDT": D(3_150), "SOLUSDT": D(150)
    }  # fmt: skip


@pytest.mark.parametrize(
    ("deficit", "fund", "exhausted"),
    [("100", "100", True), ("100.01", "100", True), ("99.99", "100", False), ("0", "0", False),
     ("0", "-5", False), ("1", "-5", True)],
)  # fmt: skip
def test_the_fund_is_exhausted_when_the_deficit_leaves_it_at_zero_or_below(
    deficit: str, fund: str, exhausted: bool
) -> None:
    assert fund_exhausted(D(deficit), D(fund)) is exhausted


def test_rows_know_their_position_in_the_account() -> None:
    """erin's isolated position is her first, her cross one her second: the layout puts cross
    legs first, and each row still names its position (the exact path takes that one)."""
    brackets = BracketArrays.from_tables(TABLES, sorted(TABLES))
    book = stress_book(columns_of(BOOK, brackets), brackets)
    erin = np.flatnonzero(book.book.pool_account == 4)
    first_rows = book.book.pool_starts[erin]
    by_pool = dict(zip(book.book.pool_isolated[erin].tolist(), first_rows.tolist(), strict=True))
    assert book.row_position[by_pool[True]] == 0
    assert book.row_position[by_pool[False]] == 1
    assert book.held_symbols == ["BTCUSDT", "ETHUSDT"]
    assert book.accounts == 5

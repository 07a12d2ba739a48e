"""The replay's pure core (``engine.replay``) on accounts whose every figure is worked out by
hand: a 1% flat maintenance rate (``MM = 1% × notional``), the default thresholds (margin call
at 0.8, re-armed below 0.8 − 0.05 = 0.75, liquidation at 1) and clearance fees of 1% on
BTCUSDT and 0.1% on ETHUSDT."""

from __future__ import annotations

from decimal import Decimal

from marginwatch.engine.batch import BracketArrays
from marginwatch.engine.episodes import EpisodeRules
from marginwatch.engine.replay import EventKind, Moment, Replay, ReplayEvent, ReplayRules
from marginwatch.engine.replay import replay_path as run_path
from marginwatch.engine.types import Account, MarginMode, Position, Thresholds
from tests.tables import flat

D = Decimal
TABLES = {"BTCUSDT": flat("BTCUSDT", "0.01"), "ETHUSDT": flat("ETHUSDT", "0.01")}
FEE_RATES = {"BTCUSDT": D("0.01"), "ETHUSDT": D("0.001")}
RULES = ReplayRules(Thresholds(), EpisodeRules(D("0.8"), D("0.75")), TABLES, FEE_RATES.__getitem__)
MARKS = {"BTCUSDT": D(50_000), "ETHUSDT": D(3_000)}
BTC_LONG = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS)


def replay_of(accounts: list[Account], fund: str) -> Replay:
    brackets = BracketArrays.from_tables(TABLES, sorted(TABLES))
    return Replay(list(accounts), dict(MARKS), brackets, RULES, D(fund))


def path(*levels: dict[str, int]) -> list[Moment]:
    """One moment per level, a second apart."""
    return [
        Moment(1_000 * n, {symbol: D(price) for symbol, price in level.items()})
        for n, level in enumerate(levels, start=1)
    ]


def timeline(events: list[ReplayEvent]) -> list[tuple[int, str, str, bool]]:
    """(moment, kind, account, isolated) of each event."""
    return [(e.moment, e.kind.value, e.account_id, e.isolated) for e in events]


def test_a_cross_long_called_resolved_called_again_then_liquidated_with_its_fee_capped() -> None:
    """alice: long 1 BTC at 50,000 on a 3,000 wallet. At a mark P, MM = 0.01 × P and
    MB = 3,000 + (P − 50,000) = P − 47,000:

    * 48,000: MR = 480 / 1,000 = 0.48: nothing;
    * 47,500: 475 / 500 = 0.95 >= 0.8: a margin call;
    * 47,600: 476 / 600 = 0.793: below 0.8 but not below 0.75: the episode goes on;
    * 47,700: 477 / 700 = 0.681 < 0.75: resolved;
    * 47,500: 0.95 again: a second episode, a second margin call;
    * 47,200: 472 / 200 = 2.36 >= 1: liquidated. Realized 47,200 − 50,000 = −2,800, which
      leaves 200; the fee 1% × 47,200 = 472 is charged only out of those 200; nothing is left,
      nothing is covered: the fund goes from 1,000 to 1,200, and the episode ends with the pool;
    * 48,000: nothing (no position left)."""
    replay = replay_of([Account("alice", D(3_000), (BTC_LONG,))], "1000")
    levels = [48_000, 47_500, 47_600, 47_700, 47_500, 47_200, 48_000]
    events = run_path(replay, path(*({"BTCUSDT": level} for level in levels)))
    assert timeline(events) == [
        (2, "margin_call", "alice", False),
        (4, "resolved", "alice", False),
        (5, "margin_call", "alice", False),
        (6, "liquidation", "alice", False),
    ]
    assert [e.pool.margin_ratio for e in events[:3]] == [D("0.95"), D(477) / 700, D("0.95")]
    liquidation = events[3]
    assert liquidation.closeout is not None
    assert liquidation.closeout.realized_pnl == D(-2_800)
    assert liquidation.closeout.fee_charged == D(200)
    assert liquidation.closeout.deficit_covered == 0
    assert liquidation.closeout.account_after.cross_wallet_balance == 0
    assert liquidation.insurance_fund == replay.fund == D(1_200)
    assert liquidation.ended_episode


def test_a_gap_through_liquidation_calls_and_liquidates_at_once_and_the_fund_covers_it() -> None:
    """bob: an isolated long of 1 BTC at 50,000 on 2,500, a cross wallet of 1,000. At 45,000
    MB = 2,500 − 5,000 = −2,500 (liquidation from outside an episode): a margin call, then the
    liquidation. Nothing is left for the fee (1% × 45,000 = 450): 0 is charged and the fund
    covers 2,500, from 10,000 to 7,500; the cross wallet keeps its 1,000."""
    position = Position(
        "BTCUSDT", D(1), D(50_000), 20, MarginMode.ISOLATED, isolated_wallet=D(2_500)
    )
    replay = replay_of([Account("bob", D(1_000), (position,))], "10000")
    events = run_path(replay, path({"BTCUSDT": 45_000}))
    assert timeline(events) == [(1, "margin_call", "bob", True), (1, "liquidation", "bob", True)]
    assert events[0].pool.margin_ratio is None  # margin balance <= 0
    closeout = events[1].closeout
    assert closeout is not None
    assert (closeout.fee_charged, closeout.deficit_covered) == (0, D(2_500))
    assert replay.fund == D(7_500)
    assert replay.accounts[0].cross_wallet_balance == D(1_000)
    assert replay.accounts[0].positions == ()


def test_an_isolated_remainder_returns_to_the_cross_wallet_and_resolves_its_episode() -> None:
    """carol: cross long 1 BTC at 50,000 on 3,000, and an isolated long of 10 ETH at 3,000 on
    400 (MR 300 / 400 = 0.75 at the start: a warning only).

    * BTCUSDT 47,500: her cross pool at 0.95: a margin call;
    * ETHUSDT 2,980: the isolated pool's MB = 400 + 10 × (−20) = 200, MM = 298: 1.49, a margin
      call and a liquidation. Realized −200 leaves 200; the fee 0.1% × 29,800 = 29.8 goes to the
      fund and 170.2 returns to the cross wallet: 3,170.2. Evaluated again at the same marks,
      the cross pool's MR = 475 / (3,170.2 − 2,500) = 0.709 < 0.75: resolved."""
    eth = Position("ETHUSDT", D(10), D(3_000), 10, MarginMode.ISOLATED, isolated_wallet=D(400))
    replay = replay_of([Account("carol", D(3_000), (BTC_LONG, eth))], "0")
    events = run_path(replay, path({"BTCUSDT": 47_500}, {"ETHUSDT": 2_980}))
    assert timeline(events) == [
        (1, "margin_call", "carol", False),
        (2, "margin_call", "carol", True),
        (2, "liquidation", "carol", True),
        (2, "resolved", "carol", False),
    ]
    closeout = events[2].closeout
    assert closeout is not None
    assert closeout.fee_charged == D("29.8")
    assert closeout.account_after.cross_wallet_balance == D("3170.2")
    assert events[3].pool.margin_ratio == D(475) / D("670.2")
    assert replay.fund == D("29.8")


def test_a_mark_that_does_not_change_evaluates_nothing() -> None:
    """A repeated level moves no pool: nothing is screened again."""
    replay = replay_of([Account("alice", D(3_000), (BTC_LONG,))], "0")
    run_path(replay, path({"BTCUSDT": 47_500}))
    evaluated = replay.counts.pools_evaluated
    assert replay.advance(Moment(9_000, {"BTCUSDT": D(47_500)})) == []
    assert replay.counts.pools_evaluated == evaluated
    assert [e.kind for e in replay.advance(Moment(9_500, {"BTCUSDT": D(47_700)}))] == [
        EventKind.RESOLVED
    ]

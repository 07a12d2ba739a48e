"""ADL ranking (reference §2.7): LeveragePnl worked out by hand on a small book, its quantiles
exactly and in floats, the float ranking against the exact one on random books, and the
partitions' sketches."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginwatch.engine import adl_batch, batch
from marginwatch.engine.adl import (
    SKETCH_POINTS,
    ScoreSketch,
    leverage_pnl,
    position_score,
    report_quantiles,
    sketched_quantile,
)
from marginwatch.engine.exact import AccountReport, evaluate_account
from marginwatch.engine.types import Account, Thresholds
from tests.adl_book import FLAT, HAND_BOOK, HAND_QUANTILES, HAND_SCORES, MARK, cross
from tests.strategies import TABLES, books

D = Decimal


def hand_reports() -> list[AccountReport]:
    return [evaluate_account(a, MARK, FLAT, Thresholds()) for a in HAND_BOOK]


def test_leverage_pnl_of_the_hand_book_is_worked_out_by_hand() -> None:
    """Each position's exact score is the fraction worked out above."""
    for report in hand_reports():
        scores = [position_score(p) for p in report.positions]
        expected = HAND_SCORES[report.account.account_id]
        assert all(abs(s - e) <= D("1e-25") for s, e in zip(scores, expected, strict=True))


def test_leverage_pnl_is_zero_without_margin_balance() -> None:
    """MB <= 0: the margin ratio counts as 0, whatever the profit."""
    assert leverage_pnl(D(100), D(-200), D(50), D(-100)) == 0
    assert leverage_pnl(D(100), D(-200), D(50), D(0)) == 0
    assert leverage_pnl(D(100), D(-200), D(50), D(100)) == D(100) * D("0.5")  # max(1, −200) = 1


def test_exact_quantiles_of_the_hand_book() -> None:
    """Ranked per side, ties sharing, the hedge pair's legs sharing the larger."""
    quantiles = report_quantiles(hand_reports())
    assert dict(zip([a.account_id for a in HAND_BOOK], quantiles, strict=True)) == HAND_QUANTILES


def test_float_quantiles_of_the_hand_book() -> None:
    """The batch path ranks the hand book the same way."""
    arrays = batch.BracketArrays.from_tables(FLAT, ["BTCUSDT"])
    book, index = batch.build_book(list(HAND_BOOK), arrays)
    marks = arrays.marks_array(MARK)
    result = batch.evaluate(book, arrays, marks, Thresholds())
    quantiles = adl_batch.row_quantiles(book, adl_batch.row_scores(book, result, marks))
    found = {a.account_id: tuple(int(quantiles[row]) for row in rows)
             for a, rows in zip(HAND_BOOK, index.rows, strict=True)}  # fmt: skip
    assert found == HAND_QUANTILES


COMMON = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.data_too_large])  # fmt: skip


@settings(COMMON, max_examples=300)
@given(books(max_accounts=12))
def test_float_ranking_agrees_with_exact_but_within_its_bound_of_a_tie(
    case: tuple[dict[str, Decimal], list[Account], dict[str, Decimal]],
) -> None:
    """Each float score is within its bound ``t`` of the exact one; each row's float
    ``below`` lies between the exact counts of scores under ``s − t − t'`` and under
    ``s + t + t'``, so it is the exact one unless another score is that close."""
    _before, accounts, marks = case
    arrays = batch.BracketArrays.from_tables(TABLES, sorted(marks))
    book, index = batch.build_book(accounts, arrays)
    floats = arrays.marks_array(marks)
    result = batch.evaluate(book, arrays, floats, Thresholds())
    scores = adl_batch.row_scores(book, result, floats)
    bounds = adl_batch.score_error_bounds(book, result, floats)
    below = adl_batch.rank_rows(book, scores).below
    exact = np.zeros(book.positions, dtype=object)
    for account, rows in zip(accounts, index.rows, strict=True):
        report = evaluate_account(account, marks, TABLES, Thresholds())
        for row, position in zip(rows, report.positions, strict=True):
            exact[row] = position_score(position)
    key = 2 * book.symbol + adl_batch.row_sides(book)
    for row in range(book.positions):
        assert abs(scores[row] - float(exact[row])) <= bounds[row], (row, scores[row], exact[row])
        same = np.flatnonzero(key == key[row])
        low = sum(1 for j in same if exact[j] < exact[row] - D(bounds[row] + bounds[j]))
        high = sum(1 for j in same if exact[j] < exact[row] + D(bounds[row] + bounds[j]))
        assert low <= below[row] <= high, (row, low, below[row], high)
        if low == high:
            assert below[row] == sum(1 for j in same if exact[j] < exact[row])


def test_a_sketch_of_few_scores_holds_them_all() -> None:
    """n <= K: every score is a point, and ``below`` is exact."""
    sketch = ScoreSketch.of_sorted([0.0, 0.0, 0.5, 2.0])
    assert sketch.points == (0.0, 0.0, 0.5, 2.0)
    assert [sketch.below(x) for x in (0.0, 0.1, 0.5, 1.0, 3.0)] == [0, 2, 2, 3, 4]
    assert sketch.error_bound == 0


def test_a_sketch_of_many_scores_worked_out() -> None:
    """200 scores 0 … 199 and K = 64: points at ranks floor(3.125 j); 33 of them (j <= 32, rank
    floor(3.125 × 32) = 100) are below 100.5, so the estimate is floor(33 × 3.125) = 103 for a
    true count of 101, within ceil(200 / 64) − 1 = 3."""
    assert SKETCH_POINTS == 64
    sketch = ScoreSketch.of_sorted([float(i) for i in range(200)])
    assert sketch.points[:4] == (0.0, 3.0, 6.0, 9.0)
    assert sketch.points[-1] == 196.0  # floor(63 × 3.125)
    assert sketch.below(100.5) == 103
    assert sketch.below(-1.0) == 0
    assert sketch.below(500.0) == 200
    assert sketch.error_bound == 3


@settings(COMMON, max_examples=200)
@given(
    st.lists(st.lists(st.integers(0, 40), max_size=400), min_size=1, max_size=6),
    st.integers(-1, 41),
)
def test_merged_sketches_overestimate_below_by_less_than_n_over_k(
    partitions: list[list[int]], probe: int
) -> None:
    """Over partitions of scores (ties galore), the summed estimates are at least the true
    count below a score and exceed it by at most Σ error_bound < Σ n / K."""
    sketches = [ScoreSketch.of_sorted(sorted(float(s) / 4 for s in part)) for part in partitions]
    score = probe / 4 + 0.01 * (probe % 2)
    true_below = sum(bisect.bisect_left(sorted(s / 4 for s in part), score) for part in partitions)
    estimate = sum(sketch.below(score) for sketch in sketches)
    slack = sum(sketch.error_bound for sketch in sketches)
    assert true_below <= estimate <= true_below + slack
    assert slack < sum(len(part) for part in partitions) / SKETCH_POINTS or slack == 0


def test_sketched_quantile_is_the_exact_one_with_few_scores() -> None:
    """Sketches of a book split over two partitions rank as the whole book does."""
    longs = [[0.0, 1 / 60, 5 / 11], [0.0, 1 / 60, 100 / 21]]
    sketches = [ScoreSketch.of_sorted(sorted(part)) for part in longs]
    assert [sketched_quantile(sketches, x) for x in (0.0, 1 / 60, 5 / 11, 100 / 21)] == [0, 1, 3, 4]
    assert sketched_quantile([], 1.0) == 0


@pytest.mark.parametrize(
    ("count", "points", "message"),
    [(3, (1.0, 2.0), "2 points for a count of 3"), (2, (2.0, 1.0), "points must ascend")],
)
def test_a_malformed_sketch_is_refused(count: int, points: Sequence[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoreSketch(count, tuple(points))


def test_unranked_rows_have_no_quantile() -> None:
    """A closed row (quantity 0) and a row without a mark are left out of the ranking."""
    arrays = batch.BracketArrays.from_tables(FLAT, ["BTCUSDT"])
    book, _index = batch.build_book(list(HAND_BOOK[:2]), arrays)
    marks = np.array([math.nan])
    result = batch.evaluate(book, arrays, marks, Thresholds())
    scores = adl_batch.row_scores(book, result, marks)
    assert np.isnan(scores).all()
    assert (adl_batch.row_quantiles(book, scores) == -1).all()
    assert adl_batch.sketches(book, scores) == {}


def test_the_score_bound_covers_the_cancellation_of_mark_and_entry() -> None:
    """Long 0.1 from 50,000 at 50,000.01 on 1,000: UPNL 0.001, MM 50.00001, MB 1,000.001; in
    floats MP − EP keeps the rounding of both prices (about 1e-12 of 50,000), some 1e-10 of
    the UPNL, far past a few units of rounding of the score itself: the bound covers it."""
    marks = {"BTCUSDT": D("50000.01")}
    account = Account("a", D(1_000), (cross("0.1", 50_000),))
    arrays = batch.BracketArrays.from_tables(FLAT, ["BTCUSDT"])
    book, _index = batch.build_book([account], arrays)
    floats = arrays.marks_array(marks)
    result = batch.evaluate(book, arrays, floats, Thresholds())
    exact = D("0.001") * D("50.00001") / (D(1_000) * D("1000.001"))
    (score,) = adl_batch.row_scores(book, result, floats)
    (bound,) = adl_batch.score_error_bounds(book, result, floats)
    assert abs(score - float(exact)) > 1e-11 * float(exact)
    assert abs(score - float(exact)) <= bound < 1e-8 * float(exact)

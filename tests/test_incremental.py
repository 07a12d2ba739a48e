"""Incremental evaluation and the float screen's error bound, as properties over random books."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginwatch.engine import batch
from marginwatch.engine.exact import evaluate_account
from marginwatch.engine.formulas import ZERO
from marginwatch.engine.incremental import SymbolPools, changed_symbols
from marginwatch.engine.types import Account, Thresholds
from tests.strategies import TABLES, books, moved

THRESHOLDS = Thresholds()
WATCHED = (Decimal("0.75"),)
COMMON = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
FIELDS = ("upnl", "maintenance_margin", "margin_ratio", "status", "uncertain", "mark_tier")


def full_pass(book: batch.Book, arrays: batch.BracketArrays, marks: batch.FloatArray):
    result = batch.BatchResult.allocate(book)
    batch.evaluate_ratios(book, arrays, marks, THRESHOLDS, result, watched=WATCHED)
    return result


def assert_same(result: batch.BatchResult, expected: batch.BatchResult) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(result, name), getattr(expected, name), name)


unchanged_or_moved = st.one_of(st.just(1000), st.integers(900, 1_100))


@settings(COMMON, max_examples=200)
@given(books(), st.data())
def test_incremental_passes_equal_the_full_pass_bit_for_bit(case, data):
    """After each step moving some marks, evaluating only the pools of the moved symbols gives
    every pool exactly the figures of a full pass at the new marks."""
    market, accounts, _later = case
    arrays = batch.BracketArrays.from_tables(TABLES, list(market))
    book, _index = batch.build_book(accounts, arrays)
    index = SymbolPools.of(book, len(arrays.symbols))
    marks = arrays.marks_array(market)
    result = full_pass(book, arrays, marks)
    for _step in range(data.draw(st.integers(1, 6))):
        factors = data.draw(
            st.lists(unchanged_or_moved, min_size=len(market), max_size=len(market))
        )
        market = moved(market, factors)
        new_marks = arrays.marks_array(market)
        pools = index.pools_of(changed_symbols(new_marks, marks))
        batch.evaluate_ratios(book, arrays, new_marks, THRESHOLDS, result, pools, WATCHED)
        assert_same(result, full_pass(book, arrays, new_marks))
        marks = new_marks


def test_pools_of_lists_each_pool_holding_a_symbol_once() -> None:
    """A cross pool with two symbols is listed under both; isolated pools under their own."""
    columns = batch.Columns(
        account=np.array([0, 0, 0, 1]),
        isolated=np.array([False, False, True, False]),
        symbol=np.array([0, 1, 1, 2], dtype=np.int32),
        quantity=np.array([1.0, -2.0, 3.0, 1.0]),
        entry_price=np.array([1.0, 1.0, 1.0, 1.0]),
        isolated_wallet=np.array([0.0, 0.0, 5.0, 0.0]),
        cross_wallet=np.array([10.0, 10.0]),
    )
    book, _order = batch.book_from_columns(columns)  # pools: 0 = cross of 0, 1 = its ETH, 2
    index = SymbolPools.of(book, 3)
    assert index.pools_of(np.array([0])).tolist() == [0]
    assert index.pools_of(np.array([1])).tolist() == [0, 1]
    assert index.pools_of(np.array([1, 0, 2])).tolist() == [0, 1, 2]
    assert index.pools_of(np.array([], dtype=np.int64)).tolist() == []
    also = np.array([False, False, True])
    assert index.pools_of(np.array([0]), also).tolist() == [0, 2]  # with the marked ones
    assert also.tolist() == [False, False, True]  # the mask given is left alone


def test_changed_symbols_counts_a_mark_that_appears_or_goes() -> None:
    """Equal marks and two missing marks are unchanged; any other difference is a change."""
    previous = np.array([1.0, np.nan, 2.0, np.nan, 3.0])
    marks = np.array([1.0, np.nan, 2.5, 4.0, np.nan])
    assert changed_symbols(marks, previous).tolist() == [2, 3, 4]


def exact_pools(account: Account, marks: Mapping[str, Decimal], rows, row_pool, cross_pool: int):
    """Per pool of the account: (book pool, Σ MM, MB, gross, rows), exactly."""
    report = evaluate_account(account, marks, TABLES, THRESHOLDS)
    cross = [k for k, p in enumerate(account.positions) if not p.is_isolated]
    pools = [(cross_pool, report.cross, cross)]
    pools += [(int(row_pool[rows[k]]), r.pool, [k])
              for k, r in enumerate(report.positions) if r.position.is_isolated]  # fmt: skip
    for pool, figures, members in pools:
        legs = [account.positions[k] for k in members]
        gross = abs(figures.wallet_balance) + figures.maintenance_margin
        gross += sum((abs(p.quantity) * (marks[p.symbol] + p.entry_price) for p in legs), ZERO)
        yield pool, figures.maintenance_margin, figures.margin_balance, gross, len(legs)


@settings(COMMON, max_examples=300)
@given(books())
def test_the_screen_is_within_its_stated_error_bound(case):
    """For every pool and level t in {0, warning, margin call, 0.75, liquidation}, the float
    ``MM − t·MB`` is within ``rounding_bound(rows) × gross`` of the exact value."""
    market, accounts, _later = case
    arrays = batch.BracketArrays.from_tables(TABLES, list(market))
    book, index = batch.build_book(accounts, arrays)
    result = full_pass(book, arrays, arrays.marks_array(market))
    levels = [ZERO, THRESHOLDS.warning_ratio, THRESHOLDS.margin_call_ratio, *WATCHED, Decimal(1)]
    row_pool = batch.row_pool(book)
    for a, account in enumerate(accounts):
        cross_pool = int(index.cross_pool[a])
        for pool, mm, mb, gross, rows in exact_pools(
            account, market, index.rows[a], row_pool, cross_pool
        ):
            float_mb = float(book.pool_wallet[pool]) + float(result.upnl[pool])
            for t in levels:
                error = Decimal(float(result.maintenance_margin[pool]) - float(t) * float_mb)
                error -= mm - t * mb
                assert abs(error) <= Decimal(batch.rounding_bound(rows)) * gross, (a, pool, t)


@settings(COMMON, max_examples=200)
@given(books(), st.data())
def test_closed_rows_kept_in_place_change_nothing(case, data):
    """Positions closed in place (quantity 0) give every pool the ratio, status and
    liquidation prices of a book laid out without them; a pool of closed rows only is empty."""
    market, accounts, _later = case
    closed = [
        data.draw(st.lists(st.booleans(), min_size=len(a.positions), max_size=len(a.positions)))
        for a in accounts
    ]
    arrays = batch.BracketArrays.from_tables(TABLES, list(market))
    marks = arrays.marks_array(market)
    book, index = batch.build_book(accounts, arrays)
    for a, flags in enumerate(closed):
        book.quantity[[index.rows[a][k] for k, shut in enumerate(flags) if shut]] = 0.0
    kept = [
        replace(
            account,
            positions=tuple(
                p for p, shut in zip(account.positions, flags, strict=True) if not shut
            ),
        )
        for account, flags in zip(accounts, closed, strict=True)
    ]
    slim, slim_index = batch.build_book(kept, arrays)
    in_place = batch.evaluate(book, arrays, marks, THRESHOLDS)
    laid_out = batch.evaluate(slim, arrays, marks, THRESHOLDS)
    for a, account in enumerate(accounts):
        cross, slim_cross = int(index.cross_pool[a]), int(slim_index.cross_pool[a])
        assert in_place.status[cross] == laid_out.status[slim_cross]
        np.testing.assert_allclose(in_place.margin_ratio[cross], laid_out.margin_ratio[slim_cross])
        open_rows = [k for k, shut in enumerate(closed[a]) if not shut]
        for slim_k, k in enumerate(open_rows):
            np.testing.assert_allclose(
                in_place.liquidation_price[index.rows[a][k]],
                laid_out.liquidation_price[slim_index.rows[a][slim_k]],
                rtol=1e-9,
            )
        for k, shut in enumerate(closed[a]):
            if shut and account.positions[k].is_isolated:
                pool = int(batch.row_pool(book)[index.rows[a][k]])
                assert in_place.status[pool] == 0
                assert np.isnan(in_place.liquidation_price[index.rows[a][k]])

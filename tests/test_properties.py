"""Property-based tests of the margin engine over the real default bracket tables.

Reference: margin-math.md §2 (definitions), §3 (liquidation price), §8 (implementation notes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginwatch.engine import batch
from marginwatch.engine.exact import AccountReport, PoolReport, evaluate_account
from marginwatch.engine.formulas import ZERO
from marginwatch.engine.types import (
    Account,
    MarginMode,
    Position,
    PositionMode,
    Status,
    Thresholds,
)
from tests.strategies import TABLES, books, market_and_account

THRESHOLDS = Thresholds()
RATIO_TOLERANCE = Decimal("1e-9")
FLOAT_TOLERANCE = 1e-9
NUDGE = Decimal("0.001")  # 0.1 % past the liquidation price

COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

hedge_or_one_way = st.sampled_from([PositionMode.ONE_WAY, PositionMode.HEDGE])


def evaluate(account: Account, marks: Mapping[str, Decimal]) -> AccountReport:
    return evaluate_account(account, marks, TABLES, THRESHOLDS)


def with_mark(marks: Mapping[str, Decimal], symbol: str, price: Decimal) -> dict[str, Decimal]:
    return {**marks, symbol: price}


def pool_of(report: AccountReport, k: int) -> PoolReport:
    """The pool position ``k`` belongs to: its own if isolated, else the account's cross pool."""
    return report.positions[k].pool if report.account.positions[k].is_isolated else report.cross


def group_size(account: Account, k: int) -> int:
    """Number of legs sharing position ``k``'s liquidation price (1, or 2 for a hedged pair)."""
    position = account.positions[k]
    if position.is_isolated:
        return 1
    return sum(1 for p in account.positions if not p.is_isolated and p.symbol == position.symbol)


def assert_ratio_is_one(ratio: Decimal | None, context: object) -> None:
    assert ratio is not None, context
    assert abs(ratio - 1) <= RATIO_TOLERANCE, (ratio, context)


accounts_for_lp = st.tuples(hedge_or_one_way, st.booleans()).flatmap(
    lambda args: market_and_account(
        mode=args[0], require_hedged_pair=args[0] is PositionMode.HEDGE and args[1]
    )
)


@settings(COMMON, max_examples=500)
@given(accounts_for_lp)
def test_margin_ratio_is_one_at_liquidation_price(case):
    """At mark = reported liquidation price, the position's pool margin ratio is exactly 1."""
    marks, account = case
    report = evaluate(account, marks)
    for k, position in enumerate(account.positions):
        price = report.positions[k].liquidation_price
        if price is None:
            continue
        assert price > 0
        moved = evaluate(account, with_mark(marks, position.symbol, price))
        assert_ratio_is_one(pool_of(moved, k).margin_ratio, (k, position, price))


@settings(COMMON, max_examples=400)
@given(accounts_for_lp)
def test_past_liquidation_price_is_liquidation(case):
    """Past the LP (adverse side) the pool liquidates; between mark and LP it keeps its state."""
    marks, account = case
    report = evaluate(account, marks)
    for k, position in enumerate(account.positions):
        price = report.positions[k].liquidation_price
        current = pool_of(report, k).status
        if group_size(account, k) == 1:
            # One leg: equity − MM rises with the price for a long and falls for a short, so
            # the adverse side is below a long's price and above a short's.
            long = position.quantity > 0
            if price is None:
                # No positive root: a long is safe at every price, a short liquidating at all.
                assert (current is Status.LIQUIDATION) == (not long), (k, position, report)
                continue
            past = price * (1 - NUDGE) if long else price * (1 + NUDGE)
            moved = evaluate(account, with_mark(marks, position.symbol, past))
            assert pool_of(moved, k).status is Status.LIQUIDATION, (k, position, price)
        elif price is not None:
            # Hedged pair: equity − MM is concave in the price, so at a simple root it is
            # negative on one side; the reported (nearest) root can be either one.
            statuses = {
                pool_of(evaluate(account, with_mark(marks, position.symbol, p)), k).status
                for p in (price * (1 - NUDGE), price * (1 + NUDGE))
            }
            assert Status.LIQUIDATION in statuses, (k, position, price)
        if price is not None:
            # Nearest root: equity − MM keeps its sign from the mark up to the reported price,
            # so halfway there the pool is liquidating exactly when it is at the mark.
            halfway = (marks[position.symbol] + price) / 2
            midway = pool_of(evaluate(account, with_mark(marks, position.symbol, halfway)), k)
            assert (midway.status is Status.LIQUIDATION) == (current is Status.LIQUIDATION), (
                k,
                position,
                price,
                midway,
            )


def without_isolated(account: Account) -> Account:
    return replace(account, positions=tuple(p for p in account.positions if not p.is_isolated))


@settings(COMMON, max_examples=300)
@given(market_and_account())
def test_isolated_positions_do_not_change_cross_pool(case):
    """The cross pool (and cross liquidation prices) ignore isolated positions entirely."""
    marks, account = case
    full = evaluate(account, marks)
    cross_only = evaluate(without_isolated(account), marks)
    assert full.cross == cross_only.cross
    cross_reports = [r for r in full.positions if not r.position.is_isolated]
    assert [r.liquidation_price for r in cross_reports] == [
        r.liquidation_price for r in cross_only.positions
    ]
    assert [r.bankruptcy_price for r in cross_reports] == [
        r.bankruptcy_price for r in cross_only.positions
    ]


def isolated_positions(account: Account) -> list[tuple[int, Position]]:
    return [(k, p) for k, p in enumerate(account.positions) if p.is_isolated]


@settings(COMMON, max_examples=400)
@given(market_and_account())
def test_isolated_loss_at_liquidation_is_bounded_by_wallet(case):
    """An isolated position is liquidated before its wallet is gone: loss at LP <= wallet."""
    marks, account = case
    report = evaluate(account, marks)
    for k, position in isolated_positions(account):
        wallet = position.isolated_wallet
        assert wallet is not None
        own = report.positions[k]
        # At the current mark: anything short of liquidation still has a positive balance.
        if own.pool.status is not Status.LIQUIDATION:
            assert own.pool.margin_balance > 0
            assert -own.unrealized_pnl < wallet
        price = own.liquidation_price
        if price is None:
            continue
        at_lp = evaluate(account, with_mark(marks, position.symbol, price)).positions[k]
        assert at_lp.maintenance_margin >= 0
        assert at_lp.pool.margin_balance >= 0, (position, price, at_lp.pool)
        assert -at_lp.unrealized_pnl <= wallet, (position, price, at_lp.unrealized_pnl)


@settings(COMMON, max_examples=400)
@given(market_and_account())
def test_isolated_bankruptcy_price(case):
    """Isolated BP = EP − side·WB/|Q|, lies past the LP, and zeroes the margin balance there."""
    marks, account = case
    report = evaluate(account, marks)
    for k, position in isolated_positions(account):
        wallet = position.isolated_wallet
        assert wallet is not None
        side = 1 if position.quantity > 0 else -1
        expected = position.entry_price - side * wallet / abs(position.quantity)
        own = report.positions[k]
        if expected <= 0:
            assert own.bankruptcy_price is None
            # A long that cannot go bankrupt at a positive price cannot be liquidated either.
            assert own.liquidation_price is None
            continue
        bankruptcy = own.bankruptcy_price
        assert bankruptcy is not None
        assert abs(bankruptcy - expected) <= RATIO_TOLERANCE * expected
        liquidation = own.liquidation_price
        assert liquidation is not None  # equity − MM < 0 at the bankruptcy price
        assert side * (liquidation - bankruptcy) >= 0, (position, liquidation, bankruptcy)
        at_bp = evaluate(account, with_mark(marks, position.symbol, bankruptcy)).positions[k]
        assert abs(at_bp.pool.margin_balance) <= RATIO_TOLERANCE * abs(wallet)
        beyond = bankruptcy * (1 - side * NUDGE)
        past = evaluate(account, with_mark(marks, position.symbol, beyond)).positions[k]
        assert past.pool.status is Status.LIQUIDATION
        assert past.pool.margin_balance < 0


def float_close(actual: float, expected: Decimal | None, scale: Decimal = ZERO) -> bool:
    """``nan`` matches ``None``; otherwise agreement within 1e-9 relative.

    ``scale`` (a price of the group) sets an absolute floor of ``1e-9 × scale``: a root that
    is zero in exact arithmetic (a long at 1x, say) may come out of floats as ±1e-14.
    """
    floor = FLOAT_TOLERANCE * float(scale)
    if expected is None:
        return math.isnan(actual) or abs(actual) <= floor
    if math.isnan(actual):
        return float(expected) <= floor
    target = float(expected)
    return abs(actual - target) <= max(FLOAT_TOLERANCE * max(abs(target), abs(actual)), floor)


def group_scale(account: Account, marks: Mapping[str, Decimal], k: int) -> Decimal:
    """Largest price of position ``k``'s group (its mark and its legs' entry prices)."""
    symbol = account.positions[k].symbol
    legs = [p for p in account.positions if p.symbol == symbol]
    return max([marks[symbol], *(p.entry_price for p in legs)])


def assert_batch_matches_exact(
    accounts: list[Account],
    marks: Mapping[str, Decimal],
    book: batch.Book,
    index: batch.BookIndex,
    result: batch.BatchResult,
) -> None:
    """Every row's LP and every certain pool's status and ratio agree with the exact path."""
    pools_of_rows = batch.row_pool(book)
    for a, account in enumerate(accounts):
        report = evaluate(account, marks)
        cross_members = [p for p in account.positions if not p.is_isolated]
        pools = [(int(index.cross_pool[a]), report.cross, cross_members)]
        for k, position in enumerate(account.positions):
            row = index.rows[a][k]
            if position.is_isolated:
                pools.append((int(pools_of_rows[row]), report.positions[k].pool, [position]))
            else:
                assert pools_of_rows[row] == index.cross_pool[a]
            lp, batch_lp = report.positions[k].liquidation_price, result.liquidation_price[row]
            scale = group_scale(account, marks, k)
            assert float_close(batch_lp, lp, scale), (a, k, position, batch_lp, lp)
        for pool, exact, members in pools:
            if result.uncertain[pool]:
                # Flagged only when, exactly, the pool is genuinely close to a threshold.
                assert near_threshold(exact, members, marks), (a, pool, exact)
                continue
            status, ratio = result.status[pool], result.margin_ratio[pool]
            assert status == exact.status.severity, (a, pool, exact, status)
            assert float_close(ratio, exact.margin_ratio), (a, pool, exact, ratio)
    hypothesis.event(f"uncertain pools: {int(result.uncertain.sum())}/{book.pools}")


def near_threshold(pool: PoolReport, members: list[Position], marks: Mapping[str, Decimal]) -> bool:
    """Whether, exactly, the pool's MB or some ``MM − threshold × MB`` is within 1e-9 × gross."""
    gross = abs(pool.wallet_balance) + pool.maintenance_margin
    gross += sum((abs(p.quantity) * (marks[p.symbol] + p.entry_price) for p in members), ZERO)
    band = Decimal("1e-9") * gross
    levels = (THRESHOLDS.warning_ratio, THRESHOLDS.margin_call_ratio, THRESHOLDS.liquidation_ratio)
    gaps = [
        pool.margin_balance,
        *(pool.maintenance_margin - t * pool.margin_balance for t in levels),
    ]
    return any(abs(gap) <= band for gap in gaps)


@settings(COMMON, max_examples=300)
@given(books())
def test_batch_agrees_with_exact(case):
    """Batch statuses, ratios and LPs match the exact path, also when a result buffer is reused."""
    marks, accounts, later = case
    arrays = batch.BracketArrays.from_tables(TABLES, list(marks))
    book, index = batch.build_book(accounts, arrays)
    result = batch.evaluate(book, arrays, arrays.marks_array(marks), THRESHOLDS)
    assert_batch_matches_exact(accounts, marks, book, index, result)
    # The same buffers at new marks (any state kept between evaluations must not leak).
    batch.evaluate(book, arrays, arrays.marks_array(later), THRESHOLDS, out=result)
    assert_batch_matches_exact(accounts, later, book, index, result)


def test_exact_liquidation_price_at_rounded_tier_boundary():
    """Regression: tier boundary floor/|Q| rounded down in Decimal must not pick the lower tier."""
    # 50,000 / 2.3 = 21739.13043478260869565217391 (28 digits) and 2.3 × that < 50,000.
    position = Position(
        symbol="BTCUSDT",
        quantity=Decimal("2.3"),
        entry_price=Decimal(30_000),
        leverage=10,
        margin_mode=MarginMode.ISOLATED,
        isolated_wallet=Decimal(11_000),
    )
    account = Account("a", Decimal(0), (position,))
    price = evaluate(account, {"BTCUSDT": Decimal(30_000)}).positions[0].liquidation_price
    # Tier 2 of BTCUSDT (MMR 0.5 %, cum 50): (2.3·30000 − 11000 − 50) / (2.3·0.995).
    expected = Decimal(57_950) / Decimal("2.2885")
    assert price is not None
    assert abs(price - expected) <= RATIO_TOLERANCE * expected, (price, expected)


@settings(COMMON, max_examples=200)
@given(market_and_account())
def test_a_report_without_prices_has_every_other_figure(case):
    """``with_prices=False``: the same report with liquidation and bankruptcy prices ``None``."""
    marks, account = case
    full = evaluate(account, marks)
    lean = evaluate_account(account, marks, TABLES, THRESHOLDS, with_prices=False)
    assert lean.cross == full.cross
    stripped = [replace(p, liquidation_price=None, bankruptcy_price=None) for p in full.positions]
    assert list(lean.positions) == stripped

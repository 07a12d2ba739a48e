"""The exact evaluation path: one account at a time, in ``Decimal``.

This path decides: a margin call or a liquidation is only ever acted on after this path
confirms it against the current account and marks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from marginwatch.engine import formulas as f
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.liquidation import (
    Leg,
    bankruptcy_price,
    bybit_isolated_liquidation_price,
    liquidation_price,
)
from marginwatch.engine.types import Account, Bracket, Position, Status, Thresholds, Venue


@dataclass(frozen=True, slots=True)
class PoolReport:
    """A margin pool (the cross pool, or one isolated position) at the current marks."""

    wallet_balance: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    maintenance_margin: Decimal
    margin_ratio: Decimal | None
    status: Status


@dataclass(frozen=True, slots=True)
class PositionReport:
    """One position's figures at the current mark."""

    position: Position
    mark_price: Decimal
    notional: Decimal
    unrealized_pnl: Decimal
    initial_margin: Decimal
    bracket: Bracket
    maintenance_margin: Decimal
    liquidation_price: Decimal | None
    bankruptcy_price: Decimal | None
    pool: PoolReport

    @property
    def margin_ratio(self) -> Decimal | None:
        """Own ratio for an isolated position; ``None`` for cross (see the account's pool)."""
        return self.pool.margin_ratio if self.position.is_isolated else None


@dataclass(frozen=True, slots=True)
class AccountReport:
    """An account's cross pool and every position, in input order."""

    account: Account
    cross: PoolReport
    positions: tuple[PositionReport, ...]


@dataclass(frozen=True, slots=True)
class _Figures:
    position: Position
    mark_price: Decimal
    table: BracketTable
    notional: Decimal
    unrealized_pnl: Decimal
    bracket: Bracket
    maintenance_margin: Decimal

    @property
    def leg(self) -> Leg:
        return Leg(self.position.quantity, self.position.entry_price, self.table)


def _figures(position: Position, mark_price: Decimal, table: BracketTable) -> _Figures:
    notional = f.notional(position.quantity, mark_price)
    bracket = table.bracket_for(notional)
    return _Figures(
        position=position,
        mark_price=mark_price,
        table=table,
        notional=notional,
        unrealized_pnl=f.unrealized_pnl(position.quantity, position.entry_price, mark_price),
        bracket=bracket,
        maintenance_margin=f.maintenance_margin(notional, bracket),
    )


def _pool_report(wallet: Decimal, members: list[_Figures], thresholds: Thresholds) -> PoolReport:
    """Ratio and status of a pool; a pool without positions is ``ok`` (nothing to liquidate)."""
    upnl = sum((member.unrealized_pnl for member in members), f.ZERO)
    maintenance = sum((member.maintenance_margin for member in members), f.ZERO)
    balance = f.margin_balance(wallet, [upnl])
    ratio = f.margin_ratio(maintenance, balance)
    status = thresholds.status_of(ratio) if members else Status.OK
    return PoolReport(wallet, upnl, balance, maintenance, ratio, status)


def evaluate_pool(
    wallet: Decimal,
    positions: Sequence[Position],
    mark_prices: Mapping[str, Decimal],
    tables: Mapping[str, BracketTable],
    thresholds: Thresholds,
) -> PoolReport:
    """One pool's figures (``MR = Σ MM / (wallet + Σ UPNL)`` and its status) from its wallet
    and positions, without liquidation prices: what a decision on the pool needs."""
    members = [_figures(p, mark_prices[p.symbol], tables[p.symbol]) for p in positions]
    return _pool_report(wallet, members, thresholds)


def evaluate_members(
    account: Account,
    members: Sequence[Position],
    mark_prices: Mapping[str, Decimal],
    tables: Mapping[str, BracketTable],
    thresholds: Thresholds,
) -> PoolReport:
    """The pool of ``account`` made of ``members`` (its cross positions, or one isolated
    position) on its own wallet: the cross wallet, or the isolated position's."""
    isolated = len(members) == 1 and members[0].is_isolated
    wallet = members[0].isolated_wallet if isolated else account.cross_wallet_balance
    return evaluate_pool(wallet or f.ZERO, members, mark_prices, tables, thresholds)


def evaluate_account(
    account: Account,
    mark_prices: Mapping[str, Decimal],
    tables: Mapping[str, BracketTable],
    thresholds: Thresholds,
    venue: Venue = Venue.BINANCE,
    *,
    with_prices: bool = True,
) -> AccountReport:
    """Every figure of the contract for one account, exactly; without ``with_prices`` the
    liquidation and bankruptcy prices are left ``None`` (what a margin call's re-check and its
    event need costs a fraction of them)."""
    figures = [
        _figures(position, mark_prices[position.symbol], tables[position.symbol])
        for position in account.positions
    ]
    cross_members = [member for member in figures if not member.position.is_isolated]
    cross = _pool_report(account.cross_wallet_balance, cross_members, thresholds)
    reports = tuple(
        _isolated_report(member, thresholds, venue, with_prices)
        if member.position.is_isolated
        else _cross_report(member, cross_members, cross, with_prices)
        for member in figures
    )
    return AccountReport(account, cross, reports)


def _cross_report(
    member: _Figures, cross_members: list[_Figures], cross: PoolReport, with_prices: bool
) -> PositionReport:
    if not with_prices:
        return _report(member, None, None, cross)
    group = [other for other in cross_members if other.position.symbol == member.position.symbol]
    group_upnl = sum((other.unrealized_pnl for other in group), f.ZERO)
    group_maintenance = sum((other.maintenance_margin for other in group), f.ZERO)
    outside_balance = cross.margin_balance - group_upnl
    outside_equity = outside_balance - (cross.maintenance_margin - group_maintenance)
    legs = [other.leg for other in group]
    return _report(
        member,
        liquidation_price(legs, outside_equity, member.mark_price),
        bankruptcy_price(legs, outside_balance),
        cross,
    )


def _isolated_report(
    member: _Figures, thresholds: Thresholds, venue: Venue, with_prices: bool
) -> PositionReport:
    wallet = member.position.isolated_wallet
    assert wallet is not None  # guaranteed by Position.__post_init__ for isolated positions
    if not with_prices:
        return _report(member, None, None, _pool_report(wallet, [member], thresholds))
    if venue is Venue.BYBIT:
        liquidation = bybit_isolated_liquidation_price(member.leg, wallet)
    else:
        liquidation = liquidation_price([member.leg], wallet, member.mark_price)
    return _report(
        member,
        liquidation,
        bankruptcy_price([member.leg], wallet),
        _pool_report(wallet, [member], thresholds),
    )


def _report(
    member: _Figures,
    liquidation: Decimal | None,
    bankruptcy: Decimal | None,
    pool: PoolReport,
) -> PositionReport:
    return PositionReport(
        position=member.position,
        mark_price=member.mark_price,
        notional=member.notional,
        unrealized_pnl=member.unrealized_pnl,
        initial_margin=f.initial_margin(member.notional, member.position.leverage),
        bracket=member.bracket,
        maintenance_margin=member.maintenance_margin,
        liquidation_price=liquidation,
        bankruptcy_price=bankruptcy,
        pool=pool,
    )

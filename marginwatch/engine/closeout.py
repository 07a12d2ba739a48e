"""Closing out a liquidated pool at mark: realized PnL, clearance fee, insurance fund.

Rules (reference §2.6; marginwatch's choices where Binance publishes none):

* every position of the pool is closed at its mark: ``realized = Q × (MP − EP)``;
* the clearance fee is ``Σ |Q| × MP × fee_rate(symbol)``, charged on the liquidated notional but
  only out of what the pool still holds: ``fee_charged = min(fee, max(wallet + realized, 0))``;
  it goes to the insurance fund;
* a negative remainder is covered by the insurance fund, which brings the pool back to zero;
* cross pool: the result is the new cross wallet; isolated pool: the position is removed and
  what is left of its wallet returns to the cross wallet.

``insurance_fund_change = fee_charged − deficit_covered``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from marginwatch.engine.formulas import ZERO, notional, unrealized_pnl
from marginwatch.engine.types import Account, Position


@dataclass(frozen=True, slots=True)
class ClosedPosition:
    """One position closed by a liquidation."""

    position: Position
    mark_price: Decimal
    realized_pnl: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class Closeout:
    """The outcome of liquidating one pool."""

    account_after: Account
    closed: tuple[ClosedPosition, ...]
    realized_pnl: Decimal
    fee_charged: Decimal
    deficit_covered: Decimal

    @property
    def insurance_fund_change(self) -> Decimal:
        return self.fee_charged - self.deficit_covered


def close_out(
    account: Account,
    to_close: Sequence[Position],
    mark_prices: dict[str, Decimal],
    fee_rate: Callable[[str], Decimal],
) -> Closeout:
    """Close ``to_close`` (the cross positions, or one isolated position) at mark."""
    closed = tuple(
        _close(position, mark_prices[position.symbol], fee_rate) for position in to_close
    )
    realized = sum((c.realized_pnl for c in closed), ZERO)
    fee = sum((c.fee for c in closed), ZERO)
    isolated = len(to_close) == 1 and to_close[0].is_isolated
    wallet = (to_close[0].isolated_wallet or ZERO) if isolated else account.cross_wallet_balance
    before_fee = wallet + realized
    fee_charged = min(fee, max(before_fee, ZERO))
    remainder = before_fee - fee_charged
    deficit = max(-remainder, ZERO)
    kept = tuple(p for p in account.positions if p not in to_close)
    left = remainder + deficit  # what the pool keeps: never negative
    cross_wallet = account.cross_wallet_balance + left if isolated else left
    after = replace(account, cross_wallet_balance=cross_wallet, positions=kept)
    return Closeout(after, closed, realized, fee_charged, deficit)


def _close(
    position: Position, mark_price: Decimal, fee_rate: Callable[[str], Decimal]
) -> ClosedPosition:
    realized = unrealized_pnl(position.quantity, position.entry_price, mark_price)
    fee = notional(position.quantity, mark_price) * fee_rate(position.symbol)
    return ClosedPosition(position, mark_price, realized, fee)

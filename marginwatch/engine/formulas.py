"""Binance USD-M margin formulas, exact (``Decimal``), one small function each.

Notation (reference §1): ``Q`` is the signed position amount (``positionAmt``), ``|Q|`` its size,
``EP`` the entry price, ``MP`` the mark price, ``N`` the notional, ``L`` the leverage, ``MMR`` and
``cum`` the maintenance margin rate and maintenance amount of the bracket holding ``N``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from marginwatch.engine.types import Bracket

ZERO = Decimal(0)


def notional(quantity: Decimal, mark_price: Decimal) -> Decimal:
    """Position notional at mark: ``N = |Q| × MP``."""
    return abs(quantity) * mark_price


def unrealized_pnl(quantity: Decimal, entry_price: Decimal, mark_price: Decimal) -> Decimal:
    """Unrealized PnL at mark: ``UPNL = Q × (MP − EP)`` (``Q`` signed: shorts gain as MP falls)."""
    return quantity * (mark_price - entry_price)


def initial_margin(position_notional: Decimal, leverage: int) -> Decimal:
    """Initial margin at mark, as positionRisk v3 reports it: ``IM = N / L``."""
    return position_notional / leverage


def maintenance_margin(position_notional: Decimal, bracket: Bracket) -> Decimal:
    """Maintenance margin: ``MM = N × MMR − cum``, with the bracket that holds ``N``."""
    return position_notional * bracket.maintenance_margin_rate - bracket.maintenance_amount


def margin_balance(wallet_balance: Decimal, unrealized_pnls: Iterable[Decimal]) -> Decimal:
    """Margin balance of a pool: ``MB = wallet + Σ UPNL`` (cross wallet, or isolated wallet)."""
    return wallet_balance + sum(unrealized_pnls, ZERO)


def margin_ratio(maintenance: Decimal, balance: Decimal) -> Decimal | None:
    """Margin ratio ``MR = MM / MB``; ``None`` (undefined: already liquidating) when ``MB <= 0``."""
    if balance <= 0:
        return None
    return maintenance / balance

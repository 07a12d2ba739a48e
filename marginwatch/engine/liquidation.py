"""Liquidation and bankruptcy prices, exact.

A *group* is the set of legs that share one price: an isolated position alone, or every cross
leg of one symbol in an account (both hedge legs share one price, reference §2.8). Everything
outside the group enters as a constant ``outside_equity``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.formulas import ZERO, maintenance_margin


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a group: signed quantity, entry price and its symbol's brackets."""

    quantity: Decimal
    entry_price: Decimal
    table: BracketTable


def liquidation_price(
    legs: Sequence[Leg], outside_equity: Decimal, mark_price: Decimal
) -> Decimal | None:
    """Binance's general formula (reference §3.1), with each leg's tier taken *at the price*.

    ``outside_equity = WB − TMM1 + UPNL1`` (for an isolated position: its wallet). In an
    interval of ``P`` where no leg changes tier, margin balance equals maintenance margin at

        ``P = (outside_equity + Σ cum − Σ Q·EP) / (Σ |Q|·MMR − Σ Q)``

    so each interval between tier boundaries (``floor / |Q|``) is solved and the root kept if
    it lies inside it (reference §3.3). A hedged group can have a root on each side of the
    mark; the nearer one is reported. ``None`` when no positive price liquidates the group.
    """
    roots = [root for root in _interval_roots(legs, outside_equity) if root > 0]
    if not roots:
        return None
    return min(roots, key=lambda root: abs(root - mark_price))


def _interval_roots(legs: Sequence[Leg], outside_equity: Decimal) -> list[Decimal]:
    leg_boundaries = [_boundaries(leg) for leg in legs]
    boundaries = sorted({ZERO}.union(*leg_boundaries))
    roots = []
    for index, low in enumerate(boundaries):
        high = boundaries[index + 1] if index + 1 < len(boundaries) else None
        # Each leg's tier in [low, high) is the number of its boundaries at or below low:
        # counted, not looked up at |Q|·low, which rounding can put just below a floor.
        tiers = [bisect.bisect_right(own, low) for own in leg_boundaries]
        root = _root_in_tiers(legs, tiers, outside_equity)
        if root is not None and low <= root and (high is None or root < high):
            roots.append(root)
    return roots


def _boundaries(leg: Leg) -> list[Decimal]:
    """Prices where the leg enters its 2nd, 3rd, ... tier: ``floor / |Q|``, ascending."""
    return [bracket.notional_floor / abs(leg.quantity) for bracket in leg.table.brackets[1:]]


def _root_in_tiers(
    legs: Sequence[Leg], tiers: Sequence[int], outside_equity: Decimal
) -> Decimal | None:
    numerator = outside_equity
    denominator = ZERO
    for leg, tier in zip(legs, tiers, strict=True):
        bracket = leg.table.brackets[tier]
        numerator += bracket.maintenance_amount - leg.quantity * leg.entry_price
        denominator += abs(leg.quantity) * bracket.maintenance_margin_rate - leg.quantity
    if denominator == 0:
        return None
    return numerator / denominator


def bankruptcy_price(legs: Sequence[Leg], outside_balance: Decimal) -> Decimal | None:
    """Price of zero margin balance (reference §2.5): the §3.1 formula without MM terms.

        ``BP = (Σ Q·EP − outside_balance) / Σ Q``,  ``outside_balance = WB + UPNL1``

    ``None`` for a flat group (``Σ Q = 0``) or when the price would not be positive.
    """
    net_quantity = sum((leg.quantity for leg in legs), ZERO)
    if net_quantity == 0:
        return None
    price = (sum((leg.quantity * leg.entry_price for leg in legs), ZERO) - outside_balance) / (
        net_quantity
    )
    return price if price > 0 else None


def bybit_isolated_liquidation_price(leg: Leg, isolated_wallet: Decimal) -> Decimal | None:
    """Bybit's isolated convention: maintenance margin valued at the *entry* notional.

        ``LP = EP − side·(isolated wallet − MM_entry)/|Q| = EP − (iw − MM_entry)/Q``

    with ``MM_entry = |Q|·EP·MMR − cum`` in the tier of the entry notional (reference §3.4).
    """
    entry_notional = abs(leg.quantity) * leg.entry_price
    entry_maintenance = maintenance_margin(entry_notional, leg.table.bracket_for(entry_notional))
    price = leg.entry_price - (isolated_wallet - entry_maintenance) / leg.quantity
    return price if price > 0 else None

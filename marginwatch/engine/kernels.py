"""Compiled loops of the batch path (numba), over the column arrays of ``batch.Book``.

Each loop is the float64 twin of an exact formula in ``formulas`` and ``liquidation``; the
docstrings name which. Rows are sorted so that every margin pool and every liquidation-price
group is a contiguous range, so per-pool sums are running sums in one pass (no scatter).

Bracket tables come as padded 2-D arrays ``[symbol, tier]``; ``floors`` is padded with ``inf``
so that a tier search never walks past a symbol's last tier.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Status codes, in ``types.STATUS_ORDER``: ok, warning, margin_call, liquidation.
LIQUIDATION_CODE = 3


@njit(cache=True, nogil=True, inline="always")
def _tier(floors: np.ndarray, symbol: int, notional: float) -> int:
    """Index of the tier holding ``notional``: floor inclusive, cap exclusive."""
    tier = 0
    last = floors.shape[1] - 1
    while tier < last and notional >= floors[symbol, tier + 1]:
        tier += 1
    return tier


@njit(cache=True, nogil=True)
def evaluate_pools(
    marks: np.ndarray,
    symbol: np.ndarray,
    quantity: np.ndarray,
    entry_price: np.ndarray,
    pool_starts: np.ndarray,
    pool_wallet: np.ndarray,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
    thresholds: np.ndarray,
    band: float,
    out_upnl: np.ndarray,
    out_maintenance: np.ndarray,
    out_ratio: np.ndarray,
    out_status: np.ndarray,
    out_uncertain: np.ndarray,
) -> None:
    """Per pool: ``Σ UPNL``, ``Σ MM``, ``MR = Σ MM / (wallet + Σ UPNL)`` and its status.

    A pool is *uncertain* when float rounding could flip a threshold comparison:
    ``|MM − threshold × MB| <= band × gross``, where ``gross`` bounds the magnitude of every
    term summed (``|wallet| + Σ (|Q|·MP + |Q|·EP + MM)``). The exact path decides those.
    """
    for pool in range(pool_wallet.shape[0]):
        upnl = 0.0
        maintenance = 0.0
        gross = abs(pool_wallet[pool])
        for row in range(pool_starts[pool], pool_starts[pool + 1]):
            sym = symbol[row]
            mark = marks[sym]
            size = abs(quantity[row])
            notional = size * mark
            tier = _tier(floors, sym, notional)
            margin = notional * rate[sym, tier] - amount[sym, tier]
            maintenance += margin
            upnl += quantity[row] * (mark - entry_price[row])
            gross += notional + size * entry_price[row] + margin
        balance = pool_wallet[pool] + upnl
        out_upnl[pool] = upnl
        out_maintenance[pool] = maintenance
        _classify(
            pool,
            pool_starts,
            maintenance,
            balance,
            band * gross,
            thresholds,
            out_ratio,
            out_status,
            out_uncertain,
        )


@njit(cache=True, nogil=True, inline="always")
def _classify(
    pool: int,
    pool_starts: np.ndarray,
    maintenance: float,
    balance: float,
    tolerance: float,
    thresholds: np.ndarray,
    out_ratio: np.ndarray,
    out_status: np.ndarray,
    out_uncertain: np.ndarray,
) -> None:
    """Status = number of thresholds reached; ``MB <= 0`` is liquidation with no ratio."""
    empty = pool_starts[pool + 1] == pool_starts[pool]
    uncertain = abs(balance) <= tolerance and not empty
    if balance <= 0.0:
        out_ratio[pool] = math.nan
        out_status[pool] = 0 if empty else LIQUIDATION_CODE
    else:
        out_ratio[pool] = maintenance / balance
        status = 0
        for threshold in thresholds:
            gap = maintenance - threshold * balance
            if gap >= 0.0:
                status += 1
            if abs(gap) <= tolerance and not empty:
                uncertain = True
        out_status[pool] = 0 if empty else status
    out_uncertain[pool] = uncertain


@njit(cache=True, nogil=True)
def liquidation_prices(
    marks: np.ndarray,
    symbol: np.ndarray,
    quantity: np.ndarray,
    entry_price: np.ndarray,
    pool_wallet: np.ndarray,
    pool_isolated: np.ndarray,
    pool_upnl: np.ndarray,
    pool_maintenance: np.ndarray,
    group_starts: np.ndarray,
    group_pool: np.ndarray,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
    bybit_isolated: bool,
    out_price: np.ndarray,
) -> None:
    """Liquidation price per group (NaN where none), written to each of its rows.

    ``outside_equity = WB − TMM1 + UPNL1``: the pool's wallet plus the uPnL and minus the MM of
    every position outside the group, from the sums of ``evaluate_pools``.
    """
    for group in range(group_pool.shape[0]):
        first = group_starts[group]
        stop = group_starts[group + 1]
        pool = group_pool[group]
        mark = marks[symbol[first]]
        if pool_isolated[pool]:
            outside = pool_wallet[pool]
        else:
            upnl, maintenance = _group_sums(
                marks, symbol, quantity, entry_price, floors, rate, amount, first, stop
            )
            outside = (
                pool_wallet[pool] + pool_upnl[pool] - pool_maintenance[pool] - upnl + maintenance
            )
        if bybit_isolated and pool_isolated[pool]:
            price = _bybit_isolated(
                symbol[first], quantity[first], entry_price[first], outside, floors, rate, amount
            )
        elif stop - first == 1:
            price = _single_leg(
                symbol[first],
                quantity[first],
                entry_price[first],
                outside,
                mark,
                floors,
                rate,
                amount,
            )
        else:
            price = _interval_scan(
                symbol, quantity, entry_price, first, stop, outside, mark, floors, rate, amount
            )
        for row in range(first, stop):
            out_price[row] = price


@njit(cache=True, nogil=True, inline="always")
def _group_sums(
    marks: np.ndarray,
    symbol: np.ndarray,
    quantity: np.ndarray,
    entry_price: np.ndarray,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
    first: int,
    stop: int,
) -> tuple[float, float]:
    upnl = 0.0
    maintenance = 0.0
    for row in range(first, stop):
        sym = symbol[row]
        mark = marks[sym]
        notional = abs(quantity[row]) * mark
        tier = _tier(floors, sym, notional)
        maintenance += notional * rate[sym, tier] - amount[sym, tier]
        upnl += quantity[row] * (mark - entry_price[row])
    return upnl, maintenance


@njit(cache=True, nogil=True)
def _single_leg(
    sym: int,
    qty: float,
    entry: float,
    outside: float,
    mark: float,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
) -> float:
    """One leg: ``LP_k = (outside + cum_k − Q·EP) / (|Q|·MMR_k − Q)`` in the tier at the price.

    With ``cum`` continuous, every tier's line bounds maintenance margin from below, so a long's
    true price is the largest ``LP_k`` and a short's the smallest: starting from the tier at the
    mark, move to the tier at the best price so far until it holds that price (at most one visit
    per tier). A table that breaks this falls back to the scan of every interval.
    """
    size = abs(qty)
    direction = 1.0 if qty > 0.0 else -1.0
    base = outside - qty * entry
    best = -math.inf * direction
    tier = _tier(floors, sym, size * mark)
    for _ in range(floors.shape[1] + 1):
        price = (base + amount[sym, tier]) / (size * rate[sym, tier] - qty)
        if direction * price <= direction * best:
            return best if best > 0.0 else math.nan
        best = price
        next_tier = _tier(floors, sym, size * max(best, 0.0))
        if next_tier == tier:
            return best if best > 0.0 else math.nan
        tier = next_tier
    symbols = np.full(1, sym, dtype=np.int32)
    return _interval_scan(
        symbols, np.full(1, qty), np.full(1, entry), 0, 1, outside, mark, floors, rate, amount
    )


@njit(cache=True, nogil=True)
def _interval_scan(
    symbol: np.ndarray,
    quantity: np.ndarray,
    entry_price: np.ndarray,
    first: int,
    stop: int,
    outside: float,
    mark: float,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
) -> float:
    """``liquidation.liquidation_price``: solve each interval between tier boundaries."""
    boundaries = [0.0]
    for row in range(first, stop):
        for tier in range(1, floors.shape[1]):
            if math.isfinite(floors[symbol[row], tier]):
                boundaries.append(floors[symbol[row], tier] / abs(quantity[row]))
    boundaries.sort()
    boundaries.append(math.inf)
    nearest = math.nan
    for index in range(len(boundaries) - 1):
        low = boundaries[index]
        high = boundaries[index + 1]
        if high <= low:
            continue
        numerator = outside
        denominator = 0.0
        for row in range(first, stop):
            sym = symbol[row]
            tier = _tier(floors, sym, abs(quantity[row]) * low)
            numerator += amount[sym, tier] - quantity[row] * entry_price[row]
            denominator += abs(quantity[row]) * rate[sym, tier] - quantity[row]
        if denominator == 0.0:
            continue
        root = numerator / denominator
        inside = low * (1.0 - 1e-12) <= root < high * (1.0 + 1e-12)
        if root > 0.0 and inside and not abs(root - mark) >= abs(nearest - mark):
            nearest = root
    return nearest


@njit(cache=True, nogil=True)
def _bybit_isolated(
    sym: int,
    qty: float,
    entry: float,
    wallet: float,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
) -> float:
    """``liquidation.bybit_isolated_liquidation_price``: ``EP − (iw − MM_entry)/Q``."""
    entry_notional = abs(qty) * entry
    tier = _tier(floors, sym, entry_notional)
    entry_maintenance = entry_notional * rate[sym, tier] - amount[sym, tier]
    price = entry - (wallet - entry_maintenance) / qty
    return price if price > 0.0 else math.nan

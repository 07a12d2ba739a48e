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
STATUS_LEVELS = 3  # thresholds[:3] are warning, margin call, liquidation
# Relative rounding error of the float screen per row summed (see ``batch``'s error bound).
ROUNDING_PER_ROW = 2.3e-16
ROUNDING_FIXED_ROWS = 10.0
BAND_ROWS = 4_000  # the rows ``batch.UNCERTAINTY_BAND`` (1e-12) covers: 2.3e-16 × 4,010 < 1e-12


@njit(cache=True, nogil=True, inline="always")
def _tier(floors: np.ndarray, symbol: int, notional: float) -> int:
    """Index of the tier holding ``notional``: floor inclusive, cap exclusive.

    Counts the floors at or below the notional, without branches (padding floors are ``inf``;
    the last column is padding in every table, so it is never counted).
    """
    tier = 0
    for index in range(1, floors.shape[1] - 1):
        tier += notional >= floors[symbol, index]
    return tier


@njit(cache=True, nogil=True, inline="always")
def _holds(floors: np.ndarray, symbol: int, tier: int, notional: float) -> bool:
    """Whether ``tier`` holds ``notional`` (the last column of ``floors`` is always ``inf``)."""
    return bool(floors[symbol, tier] <= notional < floors[symbol, tier + 1])


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
    out_tier: np.ndarray,
    out_upnl: np.ndarray,
    out_maintenance: np.ndarray,
    out_ratio: np.ndarray,
    out_status: np.ndarray,
    out_uncertain: np.ndarray,
) -> None:
    """``_evaluate_pool`` for every pool (the full pass)."""
    for pool in range(pool_wallet.shape[0]):
        _evaluate_pool(
            pool, marks, symbol, quantity, entry_price, pool_starts, pool_wallet, floors, rate,
            amount, thresholds, band, out_tier, out_upnl, out_maintenance, out_ratio, out_status,
            out_uncertain,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def evaluate_listed_pools(
    pools: np.ndarray,
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
    out_tier: np.ndarray,
    out_upnl: np.ndarray,
    out_maintenance: np.ndarray,
    out_ratio: np.ndarray,
    out_status: np.ndarray,
    out_uncertain: np.ndarray,
) -> None:
    """``_evaluate_pool`` for the pools listed in ``pools`` only (an incremental pass): each
    one's figures are the full pass's, bit for bit (same rows, same order of summation)."""
    for index in range(pools.shape[0]):
        _evaluate_pool(
            pools[index], marks, symbol, quantity, entry_price, pool_starts, pool_wallet, floors,
            rate, amount, thresholds, band, out_tier, out_upnl, out_maintenance, out_ratio,
            out_status, out_uncertain,
        )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _evaluate_pool(
    pool: int,
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
    out_tier: np.ndarray,
    out_upnl: np.ndarray,
    out_maintenance: np.ndarray,
    out_ratio: np.ndarray,
    out_status: np.ndarray,
    out_uncertain: np.ndarray,
) -> None:
    """One pool: ``Σ UPNL``, ``Σ MM``, ``MR = Σ MM / (wallet + Σ UPNL)`` and its status.

    ``out_tier`` holds each row's tier at its last mark: it is checked first (two comparisons,
    almost always still right) and updated by the branch-free search when the notional left it.
    A pool is *uncertain* when float rounding could flip a threshold comparison,
    ``|MM − threshold × MB| <= max(band, ROUNDING_PER_ROW × (rows + 10)) × gross``, where
    ``gross`` bounds the magnitude of every term summed (``|wallet| + Σ (|Q|·MP + |Q|·EP +
    MM)``); ``batch``'s docstring derives the bound. The exact path decides those.
    """
    upnl = 0.0
    maintenance = 0.0
    gross = abs(pool_wallet[pool])
    held = False
    for row in range(pool_starts[pool], pool_starts[pool + 1]):
        held |= quantity[row] != 0.0
        sym = symbol[row]
        mark = marks[sym]
        size = abs(quantity[row])
        notional = size * mark
        tier = out_tier[row]  # the row's tier last time: it rarely changes between ticks
        if not _holds(floors, sym, tier, notional):
            tier = _tier(floors, sym, notional)
            out_tier[row] = tier
        margin = notional * rate[sym, tier] - amount[sym, tier]
        maintenance += margin
        upnl += quantity[row] * (mark - entry_price[row])
        gross += notional + size * entry_price[row] + margin
    out_upnl[pool] = upnl
    out_maintenance[pool] = maintenance
    balance = pool_wallet[pool] + upnl
    out_ratio[pool] = maintenance / balance if balance > 0.0 else math.nan
    if not held:  # no rows, or only closed ones (quantity 0): nothing to liquidate
        out_status[pool] = 0
        out_uncertain[pool] = False
    else:
        rows = pool_starts[pool + 1] - pool_starts[pool]
        relative = band
        if rows > BAND_ROWS:  # past what ``band`` covers: the bound itself
            relative = ROUNDING_PER_ROW * (rows + ROUNDING_FIXED_ROWS)
        out_status[pool], out_uncertain[pool] = _classify(
            maintenance, balance, relative * gross, thresholds
        )


@njit(cache=True, nogil=True, inline="always")
def _classify(
    maintenance: float, balance: float, tolerance: float, thresholds: np.ndarray
) -> tuple[int, bool]:
    """(status, uncertain): the number of the first ``STATUS_LEVELS`` thresholds reached
    (``MB <= 0`` is liquidation); uncertain when the balance or the gap to any threshold
    (further ones are watched levels, e.g. the re-arm level) is within ``tolerance``."""
    uncertain = abs(balance) <= tolerance
    status = 0
    for index in range(thresholds.shape[0]):
        gap = maintenance - thresholds[index] * balance
        if index < STATUS_LEVELS and gap >= 0.0:
            status += 1
        uncertain |= abs(gap) <= tolerance
    return (LIQUIDATION_CODE if balance <= 0.0 else status), uncertain


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
    mark_tier: np.ndarray,
    price_tier_hint: np.ndarray,
    out_price: np.ndarray,
) -> None:
    """Liquidation price per group (NaN where none), written to each of its rows.

    ``outside_equity = WB − TMM1 + UPNL1``: the pool's wallet plus the uPnL and minus the MM of
    every position outside the group, from the sums and ``mark_tier`` of ``evaluate_pools``.
    ``price_tier_hint`` keeps each row's tier at its last liquidation price (a first guess).
    """
    for group in range(group_pool.shape[0]):
        first = group_starts[group]
        stop = group_starts[group + 1]
        pool = group_pool[group]
        if pool_isolated[pool]:
            outside = pool_wallet[pool]
        else:
            own = 0.0
            for row in range(first, stop):
                own += _equity_term(
                    marks, symbol, quantity, entry_price, rate, amount, mark_tier[row], row
                )
            outside = pool_wallet[pool] + pool_upnl[pool] - pool_maintenance[pool] - own
        mark = marks[symbol[first]]
        live, only = _open_legs(quantity, first, stop)
        if live == 0:
            price = math.nan
        elif live == 1 and stop - first > 1:  # a hedge pair with one leg closed
            price = _single_leg(
                symbol[only], quantity[only], entry_price[only], outside, mark, floors, rate,
                amount, mark_tier[only], price_tier_hint, only,
            )  # fmt: skip
        elif bybit_isolated and pool_isolated[pool]:
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
                mark_tier[first],
                price_tier_hint,
                first,
            )
        elif stop - first == 2:
            price = _two_legs(
                symbol[first],
                quantity[first],
                entry_price[first],
                quantity[first + 1],
                entry_price[first + 1],
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
def _open_legs(quantity: np.ndarray, first: int, stop: int) -> tuple[int, int]:
    """How many of the group's rows hold a position (quantity not 0), and the last of them."""
    live = 0
    only = first
    for row in range(first, stop):
        if quantity[row] != 0.0:
            live += 1
            only = row
    return live, only


@njit(cache=True, nogil=True, inline="always")
def _equity_term(
    marks: np.ndarray,
    symbol: np.ndarray,
    quantity: np.ndarray,
    entry_price: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
    tier: int,
    row: int,
) -> float:
    """A row's ``UPNL − MM`` at its mark, in its ``tier`` there."""
    sym = symbol[row]
    mark = marks[sym]
    margin = abs(quantity[row]) * mark * rate[sym, tier] - amount[sym, tier]
    return float(quantity[row] * (mark - entry_price[row]) - margin)


@njit(cache=True, nogil=True, inline="always")
def _single_leg(
    sym: int,
    qty: float,
    entry: float,
    outside: float,
    mark: float,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
    tier_at_mark: int,
    hints: np.ndarray,
    row: int,
) -> float:
    """One leg: ``LP_k = (outside + cum_k − Q·EP) / (|Q|·MMR_k − Q)`` in the tier at the price.

    The last tier found (``hints``) usually still holds the new price: then that is the price
    (with ``cum`` continuous, one leg's margin balance minus MM is monotone, so a tier consistent
    with its own price gives the one root). Otherwise: every tier's line bounds MM from below,
    so a long's price is the largest ``LP_k`` and a short's the smallest; starting from the tier
    at the mark, move to the tier at the best price so far until it holds that price (at most
    one visit per tier). A table that breaks this falls back to the scan of every interval.
    """
    size = abs(qty)
    base = outside - qty * entry
    tier = hints[row]
    price = (base + amount[sym, tier]) / (size * rate[sym, tier] - qty)
    if _holds(floors, sym, tier, size * max(price, 0.0)):
        return price if price > 0.0 else math.nan
    direction = 1.0 if qty > 0.0 else -1.0
    best = -math.inf * direction
    tier = tier_at_mark
    for _ in range(floors.shape[1]):
        price = (base + amount[sym, tier]) / (size * rate[sym, tier] - qty)
        if direction * price <= direction * best:
            return best if best > 0.0 else math.nan
        best = price
        next_tier = _tier(floors, sym, size * max(best, 0.0))
        if next_tier == tier:
            hints[row] = tier
            return best if best > 0.0 else math.nan
        tier = next_tier
    return _one_leg_scan(sym, qty, entry, outside, mark, floors, rate, amount)


@njit(cache=True, nogil=True)
def _one_leg_scan(
    sym: int,
    qty: float,
    entry: float,
    outside: float,
    mark: float,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
) -> float:
    symbols = np.full(1, sym, dtype=np.int32)
    return _interval_scan(
        symbols, np.full(1, qty), np.full(1, entry), 0, 1, outside, mark, floors, rate, amount
    )


@njit(cache=True, nogil=True)
def _two_legs(
    sym: int,
    qty_a: float,
    entry_a: float,
    qty_b: float,
    entry_b: float,
    outside: float,
    mark: float,
    floors: np.ndarray,
    rate: np.ndarray,
    amount: np.ndarray,
) -> float:
    """Both hedge legs of a cross symbol: ``_interval_scan`` for two legs, without sorting.

    Each leg's boundaries ``floor_k / |Q|`` ascend, so the intervals are walked by merging the
    two sequences, each leg's tier advancing as its next boundary is passed.
    """
    size_a, size_b = abs(qty_a), abs(qty_b)
    base = outside - qty_a * entry_a - qty_b * entry_b
    net = qty_a + qty_b
    tier_a = tier_b = 0
    low = 0.0
    nearest = math.nan
    while True:
        next_a = floors[sym, tier_a + 1] / size_a
        next_b = floors[sym, tier_b + 1] / size_b
        high = min(next_a, next_b)
        numerator = base + amount[sym, tier_a] + amount[sym, tier_b]
        denominator = size_a * rate[sym, tier_a] + size_b * rate[sym, tier_b] - net
        if denominator != 0.0:
            nearest = _keep_nearest(numerator / denominator, low, high, mark, nearest)
        if high == math.inf:
            return nearest
        tier_a += next_a <= high
        tier_b += next_b <= high
        low = high


@njit(cache=True, nogil=True, inline="always")
def _keep_nearest(root: float, low: float, high: float, mark: float, nearest: float) -> float:
    """``root`` if it is positive, inside ``[low, high)`` and nearer the mark than ``nearest``."""
    inside = low * (1.0 - 1e-12) <= root < high * (1.0 + 1e-12)
    if root > 0.0 and inside and not abs(root - mark) >= abs(nearest - mark):
        return root
    return nearest


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
    """``liquidation.liquidation_price`` for any number of legs: solve each interval."""
    boundaries = [0.0]
    for row in range(first, stop):
        if quantity[row] == 0.0:
            continue
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
            if quantity[row] == 0.0:
                continue
            sym = symbol[row]
            tier = _tier_by_boundaries(floors, sym, abs(quantity[row]), low)
            numerator += amount[sym, tier] - quantity[row] * entry_price[row]
            denominator += abs(quantity[row]) * rate[sym, tier] - quantity[row]
        if denominator != 0.0:
            nearest = _keep_nearest(numerator / denominator, low, high, mark, nearest)
    return nearest


@njit(cache=True, nogil=True, inline="always")
def _tier_by_boundaries(floors: np.ndarray, sym: int, size: float, low: float) -> int:
    """The leg's tier in the interval starting at ``low``: its boundaries ``floor / |Q|`` at or
    below ``low``, counted with the same division that made them (no rounding mismatch)."""
    tier = 0
    for index in range(1, floors.shape[1] - 1):
        tier += floors[sym, index] / size <= low
    return tier


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

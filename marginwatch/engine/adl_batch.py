"""ADL ranking over a whole ``batch.Book`` in floats: every row's LeveragePnl, its rank among
its (symbol, side), its quantile, and a partition's sketches (the rules: ``engine.adl``).

A row is ranked when it holds a position (quantity not 0) and its score is finite (its symbol
has a mark); other rows score ``nan``, rank ``-1`` and have quantile ``-1``.

The float error bound. With ``u = 2⁻⁵³``, a row's ``UPNL = Q·(MP − EP)`` is within ``δU =
4u·|Q|·(MP + EP)`` of its exact value and a pool's ``MM`` and ``MB`` within ``e = 2u·(n +
10)·gross`` (``batch``'s bound, ``gross`` taken with ``MM <= |Q|·MP``). So ``PnlPercent = A``
is within ``δA = δU / max(1, WB) + 3u·A`` and, when ``MB − e > 0``, ``MarginRatio = B`` within
``δB = e·(1 + B) / (MB − e) + 3u·B`` (0 when ``MB + e <= 0``: both ratios are 0; infinite
otherwise, the sign of ``MB`` in doubt). The score ``A·B`` is then within ``t = 2·(δA·(B + δB)
+ (A + δA)·δB + u·A·B)`` (a factor 2 for the second-order terms): ``score_error_bounds``.
Two rows whose scores differ by more than the sum of their bounds are in the exact order, so
the float ``below`` of a row lies between the exact counts of the rows scoring less than
``s − t_row − t_other`` and less than ``s + t_row + t_other`` (``tests/test_adl.py`` checks it
on random books); it is the exact ``below`` unless another row is that close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from marginwatch.engine.adl import HIGHEST_QUANTILE, QUANTILES, ScoreSketch
from marginwatch.engine.batch import BatchResult, Book, BoolArray, FloatArray, IntArray, row_pool

Int8Array = npt.NDArray[np.int8]
UNIT_ROUNDOFF = 2.0**-53
UNRANKED = -1
SideKey = tuple[int, int]  # (symbol index, side index: 0 long, 1 short)


def row_sides(book: Book) -> Int8Array:
    """Per row: 0 (long) for a positive quantity, 1 (short) otherwise (``adl.SIDES``)."""
    return (book.quantity < 0.0).astype(np.int8)


def row_upnl(book: Book, marks: FloatArray) -> FloatArray:
    """Per row: ``Q × (MP − EP)``."""
    upnl: FloatArray = book.quantity * (marks[book.symbol] - book.entry_price)
    return upnl


def pool_ratios(book: Book, result: BatchResult) -> FloatArray:
    """Per pool: ``MM / MB`` if ``MB > 0``, else 0 (``MB = WB + Σ UPNL``)."""
    balance = book.pool_wallet + result.upnl
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio: FloatArray = np.where(balance > 0.0, result.maintenance_margin / balance, 0.0)
    return ratio


def row_scores(book: Book, result: BatchResult, marks: FloatArray) -> FloatArray:
    """Per row: ``max(0, UPNL) / max(1, WB) × MarginRatio`` of its pool (``nan``: unranked),
    from the pools' sums in ``result`` at ``marks``."""
    pool = row_pool(book)
    percent = np.maximum(0.0, row_upnl(book, marks)) / np.maximum(1.0, book.pool_wallet[pool])
    scores: FloatArray = percent * pool_ratios(book, result)[pool]
    scores[(book.quantity == 0.0) | ~np.isfinite(scores)] = np.nan
    return scores


def score_error_bounds(book: Book, result: BatchResult, marks: FloatArray) -> FloatArray:
    """Per row: ``t``, the bound on its float score's error (the module docstring)."""
    u, pool = UNIT_ROUNDOFF, row_pool(book)
    size, mark = np.abs(book.quantity), marks[book.symbol]
    gross = np.abs(book.pool_wallet) + np.bincount(
        pool, weights=size * (2.0 * mark + book.entry_price), minlength=book.pools
    )
    error = 2.0 * u * (np.diff(book.pool_starts) + 10.0) * gross
    balance = book.pool_wallet + result.upnl
    ratio = pool_ratios(book, result)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_error = np.where(
            balance - error > 0.0, error * (1.0 + ratio) / (balance - error) + 3.0 * u * ratio,
            np.where(balance + error <= 0.0, 0.0, np.inf),
        )[pool]  # fmt: skip
    wallet = np.maximum(1.0, book.pool_wallet[pool])
    percent = np.maximum(0.0, row_upnl(book, marks)) / wallet
    percent_error = 4.0 * u * size * (mark + book.entry_price) / wallet + 3.0 * u * percent
    ratio = ratio[pool]
    with np.errstate(invalid="ignore"):
        bound = 2.0 * (percent_error * (ratio + ratio_error)
                       + (percent + percent_error) * ratio_error + u * percent * ratio)  # fmt: skip
    return np.where(np.isinf(ratio_error), np.inf, bound)


@dataclass(frozen=True)
class RowRanks:
    """Per row: ``below`` (the ranked rows of its symbol and side scoring strictly lower) and
    ``count`` (the ranked rows of its symbol and side); ``-1`` and 0 for an unranked row."""

    below: IntArray
    count: IntArray

    def quantiles(self) -> Int8Array:
        """Per row: ``min(4, floor(5 × below / count))``, -1 unranked."""
        count = np.maximum(self.count, 1)
        quantile = np.minimum(HIGHEST_QUANTILE, QUANTILES * self.below // count)
        return np.where(self.below >= 0, quantile, UNRANKED).astype(np.int8)


def sorted_ranked(book: Book, scores: FloatArray) -> tuple[IntArray, IntArray]:
    """The ranked rows ordered by (symbol, side, score), and each one's (symbol, side) key
    ``2 × symbol + side``."""
    key = 2 * book.symbol.astype(np.int64) + row_sides(book)
    ranked = np.flatnonzero(np.isfinite(scores))
    order = ranked[np.lexsort((scores[ranked], key[ranked]))]
    return order, key[order]


def ranked_descending(book: Book, scores: FloatArray) -> tuple[IntArray, IntArray]:
    """The rows with a finite score ordered by (symbol, side) key ``2 × symbol + side``, then
    highest score first, then in book order; and their keys. Two stable sorts (the score's,
    then the key's: a radix sort when the keys fit 16 bits) instead of one ``lexsort``."""
    key = 2 * book.symbol.astype(np.int64) + row_sides(book)
    rows = np.flatnonzero(np.isfinite(scores))
    order = rows[np.argsort(-scores[rows], kind="stable")]
    narrow = key[order].astype(np.uint16) if key.size and key.max() < 2**16 else key[order]
    ordered: IntArray = order[np.argsort(narrow, kind="stable")]
    return ordered, key[ordered]


def rank_rows(
    book: Book, scores: FloatArray, ranked: tuple[IntArray, IntArray] | None = None
) -> RowRanks:
    """``below`` and ``count`` of every row with a finite score, per (symbol, side), from the
    descending order (``ranked_descending``, computed when not given): the rows after a score's
    run of ties within its key score strictly lower."""
    order, key = ranked_descending(book, scores) if ranked is None else ranked
    ordered, size = scores[order], order.shape[0]
    new_key = np.ones(size, dtype=np.bool_)
    new_key[1:] = key[1:] != key[:-1]
    new_run = new_key.copy()
    new_run[1:] |= ordered[1:] != ordered[:-1]
    below = np.full(book.positions, UNRANKED, dtype=np.int64)
    count = np.zeros(book.positions, dtype=np.int64)
    key_end, run_end = next_starts(new_key, size), next_starts(new_run, size)
    below[order] = key_end - run_end
    count[order] = key_end - np.flatnonzero(new_key)[np.cumsum(new_key) - 1]
    return RowRanks(below, count)


def next_starts(starts: BoolArray, size: int) -> IntArray:
    """Per position: where the next run begins after the run holding it (``size`` at the end);
    ``starts`` marks each run's first position."""
    first = np.flatnonzero(starts)
    following: IntArray = np.append(first[1:], size)[np.cumsum(starts) - 1]
    return following


def row_quantiles(
    book: Book, scores: FloatArray, ranked: tuple[IntArray, IntArray] | None = None
) -> Int8Array:
    """Per row: its quantile among its (symbol, side), the legs of a group (an account's cross
    legs of one symbol) sharing the largest; -1 unranked (``ranked``: ``ranked_descending``,
    computed when not given)."""
    quantile = rank_rows(book, scores, ranked).quantiles()
    if book.positions == 0:
        return quantile
    shared = np.maximum.reduceat(quantile, book.group_starts[:-1])
    shared_rows = np.repeat(shared, np.diff(book.group_starts))
    return np.where(quantile >= 0, shared_rows, UNRANKED).astype(np.int8)


def sketches(book: Book, scores: FloatArray) -> dict[SideKey, ScoreSketch]:
    """Per (symbol index, side index) with ranked rows: the sketch of their scores."""
    order, key = sorted_ranked(book, scores)
    ordered = scores[order]
    keys, starts = np.unique(key, return_index=True)
    stops = np.append(starts[1:], key.shape[0])[: starts.shape[0]]
    return {
        (int(k) // 2, int(k) % 2): ScoreSketch.of_sorted(ordered[start:stop].tolist())
        for k, start, stop in zip(keys, starts, stops, strict=True)
    }

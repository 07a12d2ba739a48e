"""Auto-deleveraging (ADL) ranking, exactly: Binance's LeveragePnl, its quantile, and the
sketch that lets partitions rank venue-wide (reference §2.7).

The score of a position in margin pool ``P`` (its account's cross pool, or its own isolated
pool), with ``UPNL`` the position's unrealized PnL, ``WB`` the pool's wallet (the cross wallet
balance, or the isolated wallet), ``MM`` and ``MB = WB + Σ UPNL`` the pool's maintenance margin
and margin balance::

    PnlPercent  = max(0, UPNL) / max(1, WB)
    MarginRatio = MM / MB  if MB > 0, else 0
    LeveragePnl = PnlPercent × MarginRatio

The ranking. Positions are ranked per symbol and *side*: long when the quantity is positive
(a ``BOTH`` position of positive amount or a ``LONG`` leg), short when it is negative. Among the
``count`` positions of a (symbol, side), ``below`` is the number whose score is strictly lower,
and::

    quantile = min(4, floor(5 × below / count))

so 0 to 4, higher deleveraged first. Ties share a quantile: equal scores have the same
``below`` (a tie ranks with the lowest of its scores). A position without profit scores 0:
nothing ranks below it, so its quantile is 0, and it is counted in ``count``.

Hedge mode. Binance reports one value for the LONG and SHORT legs of a cross hedge position
(§2.7). Here each leg is scored and ranked among its own side, and both legs of an account's
cross symbol report the larger of their two quantiles (the nearer risk of the pair); isolated
legs keep their own.

The sketch. A partition summarises the sorted scores ``s_0 <= … <= s_{n−1}`` of a (symbol,
side) by ``n`` and the ``k = min(K, n)`` order statistics ``s_{r_j}``, ``r_j = floor(j × n / k)``
for ``j = 0 … k − 1`` (``K = SKETCH_POINTS``; with ``n <= K`` every score). For a score ``x``,
``J`` points are below ``x`` exactly when ``r_{J−1} < below(x) <= r_J`` (``r_k = n``), so the
estimate ``r_J`` is never below the true count and exceeds it by at most ``ceil(n / k) − 1``,
less than ``n / K``. Summed over partitions, the venue-wide ``below`` is overestimated by less
than ``Σ_p n_p / K`` positions (``ScoreSketch.error_bound``), and the counts are exact.

``engine.adl_batch`` scores and ranks whole books in floats.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal

from marginwatch.engine.exact import AccountReport, PositionReport
from marginwatch.engine.types import Position, PositionSide

QUANTILES = 5  # quantiles 0 .. 4
HIGHEST_QUANTILE = QUANTILES - 1
SKETCH_POINTS = 64
PRODUCT_DIGITS = 100  # enough for the products of two 28-digit figures, exactly
PRODUCTS = Context(prec=PRODUCT_DIGITS)  # the arithmetic of a score's products
ONE = Decimal(1)
ZERO = Decimal(0)
SIDES = (PositionSide.LONG, PositionSide.SHORT)  # a side's index in the batch path's arrays

RankKey = tuple[str, PositionSide]  # (symbol, side)


def leverage_pnl(
    unrealized_pnl: Decimal, wallet: Decimal, maintenance: Decimal, balance: Decimal
) -> Decimal:
    """``max(0, UPNL) / max(1, WB) × (MM / MB if MB > 0 else 0)``: the position's ``UPNL``,
    its pool's wallet, maintenance margin and margin balance. Taken as one quotient,
    ``UPNL × MM / (max(1, WB) × MB)``, of products held to ``PRODUCT_DIGITS`` digits and
    rounded once, so scores equal as fractions are equal ``Decimal``s (ties stay ties)."""
    if balance <= 0 or unrealized_pnl <= 0:
        return ZERO
    numerator = PRODUCTS.multiply(unrealized_pnl, maintenance)
    return numerator / PRODUCTS.multiply(max(ONE, wallet), balance)


def side_of(quantity: Decimal | float) -> PositionSide:
    """The side a position is ranked among: ``LONG`` for a positive quantity, else ``SHORT``."""
    return PositionSide.LONG if quantity > 0 else PositionSide.SHORT


def quantile_of(below: int, count: int) -> int:
    """``min(4, floor(5 × below / count))``."""
    return min(HIGHEST_QUANTILE, QUANTILES * below // count)


def position_score(report: PositionReport) -> Decimal:
    """``leverage_pnl`` of a position of an exact report (its pool's figures)."""
    pool = report.pool
    return leverage_pnl(
        report.unrealized_pnl, pool.wallet_balance, pool.maintenance_margin, pool.margin_balance
    )


def rank_key(position: Position) -> RankKey:
    return position.symbol, side_of(position.quantity)


class Ranking:
    """Exact scores per (symbol, side), sorted: ``below`` and ``count`` of any score."""

    def __init__(self, scored: Iterable[tuple[RankKey, Decimal]]) -> None:
        grouped: dict[RankKey, list[Decimal]] = defaultdict(list)
        for key, score in scored:
            grouped[key].append(score)
        self.sorted_scores = {key: sorted(scores) for key, scores in grouped.items()}

    def count(self, key: RankKey) -> int:
        return len(self.sorted_scores.get(key, ()))

    def below(self, key: RankKey, score: Decimal) -> int:
        """How many positions of ``key`` score strictly lower than ``score``."""
        return bisect.bisect_left(self.sorted_scores.get(key, []), score)

    def quantile(self, key: RankKey, score: Decimal) -> int:
        """The quantile of a position of ``key`` scoring ``score`` (counted in the ranking)."""
        return quantile_of(self.below(key, score), self.count(key))


def report_quantiles(reports: Sequence[AccountReport]) -> list[tuple[int, ...]]:
    """Each position's quantile, ranked among every position of ``reports`` (the venue), per
    account in position order, cross hedge legs sharing the larger."""
    scored = [[(rank_key(p.position), position_score(p)) for p in r.positions] for r in reports]
    ranking = Ranking(item for account in scored for item in account)
    return [
        hedge_shared(
            [p.position for p in report.positions],
            [ranking.quantile(key, score) for key, score in account],
        )
        for report, account in zip(reports, scored, strict=True)
    ]


def hedge_shared(positions: Sequence[Position], quantiles: Sequence[int]) -> tuple[int, ...]:
    """``quantiles`` with the cross legs of each symbol given the largest among them."""
    largest: dict[str, int] = {}
    for position, quantile in zip(positions, quantiles, strict=True):
        if not position.is_isolated:
            largest[position.symbol] = max(largest.get(position.symbol, 0), quantile)
    return tuple(
        quantile if position.is_isolated else largest[position.symbol]
        for position, quantile in zip(positions, quantiles, strict=True)
    )


@dataclass(frozen=True, slots=True)
class ScoreSketch:
    """``count`` scores summarised by ``points``, their order statistics ``r_j = floor(j ×
    count / k)``, ``k = len(points)`` (see the module docstring)."""

    count: int
    points: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.count < 0 or len(self.points) != min(self.count, SKETCH_POINTS):
            raise ValueError(f"{len(self.points)} points for a count of {self.count}")
        if any(b < a for a, b in zip(self.points, self.points[1:], strict=False)):
            raise ValueError("points must ascend")

    @classmethod
    def of_sorted(cls, scores: Sequence[float]) -> ScoreSketch:
        """The sketch of ascending ``scores``."""
        count = len(scores)
        points = min(count, SKETCH_POINTS)
        return cls(count, tuple(float(scores[j * count // points]) for j in range(points)))

    def below(self, score: float) -> int:
        """``r_J``, ``J`` the points strictly below ``score``: at least the true count of
        scores below it, and at most ``error_bound`` more."""
        points = len(self.points)
        under = bisect.bisect_left(self.points, score)
        return self.count if under == points else under * self.count // points

    @property
    def error_bound(self) -> int:
        """``ceil(count / k) − 1``: how far ``below`` may exceed the true count."""
        points = len(self.points)
        return -(-self.count // points) - 1 if points else 0


def sketched_quantile(sketches: Sequence[ScoreSketch], score: float) -> int:
    """The quantile of ``score`` among the scores of ``sketches`` (every partition's sketch of
    one (symbol, side), the position's own among them): ``below`` summed over them."""
    count = sum(sketch.count for sketch in sketches)
    if count == 0:
        return 0
    return quantile_of(sum(sketch.below(score) for sketch in sketches), count)

"""A seeded synthetic market: correlated geometric random walks, one tick per symbol per period.

Every period (``1 / ticks_per_second`` seconds) each symbol ticks once, at its own moment within
the period (symbols are spread evenly across it). Log returns share one market factor with
weight ``correlation``. Scenarios multiply the walk; they draw no random numbers, so the same
seed gives the same walk with or without them. Prices are rounded to ``significant_digits``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from marginwatch.producer.pacing import DEFAULT_MAX_BATCH, paced_batches
from marginwatch.producer.scenarios import Scenario
from marginwatch.producer.ticks import RawTick, Source, wall_clock_ms

# Start prices of the majors; other symbols start log-uniformly between 0.01 and 1000.
MAJOR_START_PRICES = {
    "BTCUSDT": 67_000.0,
    "ETHUSDT": 3_500.0,
    "BNBUSDT": 600.0,
    "SOLUSDT": 150.0,
    "XRPUSDT": 0.6,
    "DOGEUSDT": 0.15,
    "ADAUSDT": 0.45,
    "LTCUSDT": 80.0,
}


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """What the synthetic market simulates; equal specs give equal prices."""

    symbols: tuple[str, ...]
    seed: int = 1
    ticks_per_second: float = 1.0
    volatility_per_second: float = 0.0003
    correlation: float = 0.6
    scenarios: tuple[Scenario, ...] = ()
    significant_digits: int = 8

    @property
    def period_seconds(self) -> float:
        """The time between two ticks of one symbol."""
        return 1.0 / self.ticks_per_second


def synthetic_ticks(
    spec: MarketSpec, start_ms: int | None = None
) -> Iterator[tuple[float, RawTick]]:
    """Endless ``(offset_seconds, tick)`` in time order; event time = start + offset.

    ``start_ms`` defaults to the wall clock when the first tick is drawn.
    """
    start_ms = wall_clock_ms() if start_ms is None else start_ms
    rng = np.random.default_rng(spec.seed)
    log_prices = np.log(start_prices(spec.symbols, rng))
    step_volatility = spec.volatility_per_second * math.sqrt(spec.period_seconds)
    for period in itertools.count():
        log_prices += step_volatility * correlated_shocks(rng, len(spec.symbols), spec.correlation)
        yield from period_ticks(spec, period, np.exp(log_prices), start_ms)


def period_ticks(
    spec: MarketSpec, period: int, walk_prices: np.ndarray, start_ms: int
) -> Iterator[tuple[float, RawTick]]:
    """One tick per symbol in ``period``, symbol i at (i + 0.5) / N of the way through it."""
    for index, symbol in enumerate(spec.symbols):
        offset_seconds = (period + (index + 0.5) / len(spec.symbols)) * spec.period_seconds
        multiplier = scenario_multiplier(spec.scenarios, symbol, offset_seconds)
        mark_price = to_significant_digits(
            float(walk_prices[index]) * multiplier, spec.significant_digits
        )
        event_time_ms = start_ms + round(offset_seconds * 1000)
        yield offset_seconds, RawTick(symbol, mark_price, event_time_ms, "synthetic")


def synthetic_source(
    spec: MarketSpec, *, paced: bool = True, max_batch: int = DEFAULT_MAX_BATCH
) -> Source:
    """The synthetic market as a source: in real time when ``paced``, else as fast as possible."""
    return paced_batches(synthetic_ticks(spec), paced=paced, max_batch=max_batch)


def start_prices(symbols: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """One start price per symbol: the majors' table, else drawn log-uniformly."""
    drawn = np.exp(rng.uniform(math.log(0.01), math.log(1000.0), size=len(symbols)))
    table = [MAJOR_START_PRICES.get(symbol) for symbol in symbols]
    return np.array([drawn[i] if price is None else price for i, price in enumerate(table)])


def correlated_shocks(rng: np.random.Generator, count: int, correlation: float) -> np.ndarray:
    """Standard normal shocks with pairwise correlation ``correlation`` (one common factor)."""
    market = rng.standard_normal()
    own = rng.standard_normal(count)
    return np.asarray(math.sqrt(correlation) * market + math.sqrt(1.0 - correlation) * own)


def scenario_multiplier(scenarios: Sequence[Scenario], symbol: str, offset_seconds: float) -> float:
    """The product of the multipliers of ``symbol``'s scenarios at ``offset_seconds``."""
    return math.prod(s.multiplier(offset_seconds) for s in scenarios if s.symbol == symbol)


def to_significant_digits(value: float, significant_digits: int) -> Decimal:
    """``value`` as a plain decimal with ``significant_digits`` digits (no float noise)."""
    decimals = max(0, significant_digits - 1 - math.floor(math.log10(value)))
    return Decimal(f"{value:.{decimals}f}")

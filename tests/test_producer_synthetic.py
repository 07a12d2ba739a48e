"""The synthetic market: seeded walks, ticks spread over the second, scripted scenarios."""

from __future__ import annotations

import asyncio
import itertools
import math
from decimal import Decimal

import pytest

from marginwatch.producer.scenarios import Scenario, ScenarioError, parse_scenario
from marginwatch.producer.synthetic import MarketSpec, synthetic_source, synthetic_ticks
from marginwatch.producer.ticks import RawTick

T0 = 1_700_000_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "AAAUSDT", "BBBUSDT")
CRASH = Scenario("BTCUSDT", -0.12, 30.0, 10.0)
FORMAT = "expected SYMBOL:MOVE%:DURATION[@START], e.g. BTCUSDT:-12%:30s@10s"


def first_ticks(spec: MarketSpec, count: int) -> list[RawTick]:
    """The first ``count`` ticks of the market started at ``T0``."""
    return [tick for _offset, tick in itertools.islice(synthetic_ticks(spec, T0), count)]


def price_at(spec: MarketSpec, symbol: str, offset_seconds: float) -> float:
    """``symbol``'s price at its first tick at or after ``offset_seconds``."""
    for offset, tick in synthetic_ticks(spec, T0):
        if offset >= offset_seconds and tick.symbol == symbol:
            return float(str(tick.mark_price))
    raise AssertionError("unreachable: the market is endless")


def test_same_seed_same_ticks_other_seed_other_prices() -> None:
    """The market is a function of its spec: same seed, same ticks."""
    spec = MarketSpec(SYMBOLS, seed=7)
    assert first_ticks(spec, 500) == first_ticks(MarketSpec(SYMBOLS, seed=7), 500)
    other = first_ticks(MarketSpec(SYMBOLS, seed=8), 500)
    assert [t.mark_price for t in other] != [t.mark_price for t in first_ticks(spec, 500)]


def test_each_symbol_ticks_once_per_period_at_its_own_moment() -> None:
    """At 2 ticks/s every symbol ticks every 500 ms, the symbols spread across the period."""
    ticks = first_ticks(MarketSpec(SYMBOLS, ticks_per_second=2.0), 3 * len(SYMBOLS))
    assert [tick.symbol for tick in ticks] == list(SYMBOLS) * 3
    times = [tick.event_time_ms for tick in ticks]
    assert times[:5] == [T0 + 50, T0 + 150, T0 + 250, T0 + 350, T0 + 450]
    assert times[5:10] == [T0 + 550, T0 + 650, T0 + 750, T0 + 850, T0 + 950]


def test_prices_are_plain_decimals_with_eight_significant_digits() -> None:
    """Prices carry no float noise: 8 significant digits, no exponent."""
    for tick in first_ticks(MarketSpec(SYMBOLS), 50):
        assert isinstance(tick.mark_price, Decimal)
        text = str(tick.mark_price)
        assert "e" not in text.lower()
        assert len(text.replace(".", "").lstrip("0")) <= 8


def test_walks_are_correlated() -> None:
    """With correlation 0.9 the symbols' log returns move together."""
    spec = MarketSpec(SYMBOLS[:2], correlation=0.9)
    ticks = first_ticks(spec, 4_000)
    logs = {
        s: [math.log(float(str(t.mark_price))) for t in ticks if t.symbol == s] for s in SYMBOLS[:2]
    }
    returns = [[b - a for a, b in itertools.pairwise(series)] for series in logs.values()]
    mean = [sum(r) / len(r) for r in returns]
    covariance = sum((a - mean[0]) * (b - mean[1]) for a, b in zip(*returns, strict=True))
    variances = [sum((x - m) ** 2 for x in r) for r, m in zip(returns, mean, strict=True)]
    assert covariance / math.sqrt(variances[0] * variances[1]) == pytest.approx(0.9, abs=0.05)


def test_crash_scenario_reaches_minus_twelve_percent_at_the_end_of_its_window() -> None:
    """The crash multiplies the same walk: exactly 0.88 of it at the end, about −12% overall."""
    plain = MarketSpec(SYMBOLS, seed=3)
    crash = MarketSpec(SYMBOLS, seed=3, scenarios=(CRASH,))
    at_end = price_at(crash, "BTCUSDT", 40.0)
    assert at_end / price_at(plain, "BTCUSDT", 40.0) == pytest.approx(0.88, rel=1e-6)
    assert at_end / price_at(crash, "BTCUSDT", 10.0) - 1 == pytest.approx(-0.12, abs=0.01)
    assert price_at(crash, "ETHUSDT", 40.0) == price_at(plain, "ETHUSDT", 40.0)
    assert price_at(crash, "BTCUSDT", 9.0) == price_at(plain, "BTCUSDT", 9.0)


def test_scenario_move_is_geometric_over_the_window_and_then_holds() -> None:
    """Half way through, the factor is the square root of the whole move; after, the move."""
    assert CRASH.multiplier(0.0) == 1.0
    assert CRASH.multiplier(25.0) == pytest.approx(math.sqrt(0.88))
    assert CRASH.multiplier(40.0) == pytest.approx(0.88)
    assert CRASH.multiplier(1_000.0) == pytest.approx(0.88)


@pytest.mark.parametrize(
    ("spec", "scenario"),
    [
        ("BTCUSDT:-12%:30s@10s", Scenario("BTCUSDT", -0.12, 30.0, 10.0)),
        ("ethusdt:+5.5%:2m", Scenario("ETHUSDT", 0.055, 120.0, 0.0)),
        ("SOLUSDT:20%:500ms@1h", Scenario("SOLUSDT", 0.2, 0.5, 3600.0)),
        ("BTCUSDT:-12%:30", Scenario("BTCUSDT", -0.12, 30.0, 0.0)),
    ],
)
def test_scenario_specs_parse(spec: str, scenario: Scenario) -> None:
    """Symbol, signed percent move, duration with unit, optional start offset."""
    assert parse_scenario(spec) == scenario


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("BTCUSDT-12%30s", FORMAT),
        ("BTCUSDT:-12:30s", FORMAT),
        ("BTCUSDT:-12%:30s@", FORMAT),
        ("BTCUSDT:-100%:30s", "the move must be above -100%"),
        ("BTCUSDT:-10%:0s", "the duration must be positive"),
    ],
)
def test_bad_scenario_specs_are_refused_clearly(spec: str, problem: str) -> None:
    """A spec off the format quotes itself and says what is wrong."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(spec)
    assert str(caught.value) == f"scenario {spec!r}: {problem}"


def test_paced_source_releases_ticks_in_real_time() -> None:
    """At 20 ticks/s for 2 symbols, ~0.5 s of market yields ~20 ticks, in batches."""

    async def collect() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        source = synthetic_source(MarketSpec(SYMBOLS[:2], ticks_per_second=20.0))
        count = 0
        async for batch in source:
            count += len(batch)
            if count >= 20:
                break
        await source.aclose()
        return count, loop.time() - started

    count, elapsed_seconds = asyncio.run(collect())
    assert count == 20
    assert elapsed_seconds >= 0.4  # paced: 20 ticks of 2 symbols at 20/s take about 0.5 s

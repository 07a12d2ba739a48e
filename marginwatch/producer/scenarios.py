"""Scripted market moves for the synthetic source, and their one-line spec format.

``SYMBOL:MOVE%:DURATION[@START]``, e.g. ``BTCUSDT:-12%:30s@10s``: BTCUSDT falls 12% over 30 s,
starting 10 s after the market starts. Durations take ``ms``, ``s`` (default), ``m`` or ``h``.
The move multiplies the random walk, geometrically over the window (the same return every
second) and stays applied afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SPEC_FORMAT = "SYMBOL:MOVE%:DURATION[@START], e.g. BTCUSDT:-12%:30s@10s"
_NUMBER = r"\d+(?:\.\d+)?"
_SPEC = re.compile(
    rf"(?P<symbol>[A-Za-z0-9]+):(?P<move>[+-]?{_NUMBER})%"
    rf":(?P<duration>{_NUMBER})(?P<duration_unit>ms|s|m|h)?"
    rf"(?:@(?P<start>{_NUMBER})(?P<start_unit>ms|s|m|h)?)?"
)
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScenarioError(ValueError):
    """A scenario spec that cannot be parsed; the message quotes it and shows the format."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """``symbol`` moves by ``move_ratio`` (``-0.12``: −12%) over a window of the market's time."""

    symbol: str
    move_ratio: float
    duration_seconds: float
    start_seconds: float = 0.0

    @property
    def end_seconds(self) -> float:
        """When the move is complete, in seconds after the market starts."""
        return self.start_seconds + self.duration_seconds

    def multiplier(self, offset_seconds: float) -> float:
        """The factor on the price ``offset_seconds`` after the market starts."""
        progress = (offset_seconds - self.start_seconds) / self.duration_seconds
        return float((1.0 + self.move_ratio) ** min(max(progress, 0.0), 1.0))


def parse_scenario(spec: str) -> Scenario:
    """The scenario of ``spec``; ``ScenarioError`` when it does not follow ``SPEC_FORMAT``."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise ScenarioError(f"scenario {spec!r}: expected {SPEC_FORMAT}")
    move_ratio = float(match["move"]) / 100
    if move_ratio <= -1:
        raise ScenarioError(f"scenario {spec!r}: the move must be above -100%")
    duration_seconds = _seconds(match["duration"], match["duration_unit"])
    if duration_seconds <= 0:
        raise ScenarioError(f"scenario {spec!r}: the duration must be positive")
    start_seconds = _seconds(match["start"] or "0", match["start_unit"])
    return Scenario(match["symbol"].upper(), move_ratio, duration_seconds, start_seconds)


def _seconds(number: str, unit: str | None) -> float:
    """A duration in seconds from a number and its unit (default s)."""
    return float(number) * _SECONDS_PER_UNIT[unit or "s"]

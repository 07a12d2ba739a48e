"""What sources yield: raw (unvalidated) mark-price ticks and malformed inputs, in batches."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawTick:
    """A mark price as received, not yet validated: any field may be missing or wrong.

    ``origin`` says where it came from (``"ticks.csv:7"``, ``"frame 12"``) for reject messages.
    """

    symbol: object
    mark_price: object
    event_time_ms: object
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that is not a tick at all (bad JSON, a CSV row without a column): a reject."""

    message: str
    origin: str = ""
    reason: str = "malformed"


SourceItem = RawTick | Malformed
Batch = list[SourceItem]
# A source yields batches: ticks that arrived (or fell due) together, published in one call.
Source = AsyncGenerator[Batch, None]


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, now."""
    return time.time_ns() // 1_000_000

"""The message contract between the producer and the workers: mark-price ticks.

A tick is stored twice, atomically: as the latest price of its symbol in ``keys.PRICES``
(hash field = symbol, value = the tick's JSON) and as a change notice on ``keys.TICKS``
(stream fields ``s``, ``p``, ``E``, ``seq``). ``seq`` is a global sequence number: a larger
``seq`` was published later. Field names follow Binance's ``markPriceUpdate`` (``s``, ``p``, ``E``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Tick:
    """One accepted mark price: symbol, price, event time (ms since epoch), sequence."""

    symbol: str
    mark_price: Decimal
    event_time_ms: int
    sequence: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "s": self.symbol,
                "p": str(self.mark_price),
                "E": self.event_time_ms,
                "seq": self.sequence,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Tick:
        document = json.loads(text)
        return cls(
            symbol=str(document["s"]),
            mark_price=Decimal(str(document["p"])),
            event_time_ms=int(document["E"]),
            sequence=int(document["seq"]),
        )


def ticks_from_prices_hash(fields: Mapping[Any, Any]) -> dict[str, Tick]:
    """The latest tick per symbol, from ``HGETALL keys.PRICES``."""
    return {_text(symbol): Tick.from_json(value) for symbol, value in fields.items()}


def newest_sequence(ticks: Mapping[str, Tick]) -> int:
    """The sequence of the newest tick among ``ticks`` (0 when there is none)."""
    return max((tick.sequence for tick in ticks.values()), default=0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

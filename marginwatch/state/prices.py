"""Reading the newest mark prices from Redis (written by the producer, ``keys.PRICES``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick, ticks_from_prices_hash


def read_ticks(client: redis.Redis) -> dict[str, Tick]:
    """The newest tick of every symbol."""
    fields: Mapping[bytes, bytes] = client.hgetall(keys.PRICES)  # type: ignore[assignment]
    return ticks_from_prices_hash(fields)


def read_ticks_of(client: redis.Redis, symbols: Iterable[str]) -> dict[str, Tick]:
    """The newest tick of each of ``symbols`` that has one (one HMGET, only these parsed)."""
    wanted = sorted(set(symbols))
    if not wanted:
        return {}
    values: list[bytes | None] = client.hmget(keys.PRICES, wanted)  # type: ignore[assignment]
    return {s: Tick.from_json(v) for s, v in zip(wanted, values, strict=True) if v is not None}


class TickCache:
    """The newest ticks, parsed by their stored JSON (which holds the sequence): between two
    reads only the symbols that ticked are parsed again."""

    def __init__(self) -> None:
        self.parsed: dict[bytes, Tick] = {}

    def read(self, client: redis.Redis) -> dict[str, Tick]:
        """The newest tick of every symbol (one ``HGETALL``)."""
        fields: Mapping[bytes, bytes] = client.hgetall(keys.PRICES)  # type: ignore[assignment]
        old = self.parsed
        self.parsed = {raw: old.get(raw) or Tick.from_json(raw) for raw in fields.values()}
        return {symbol.decode(): self.parsed[raw] for symbol, raw in fields.items()}

"""Reading the newest mark prices from Redis (written by the producer, ``keys.PRICES``).

A tick that cannot be read is skipped and reported (``BadRecords``): its symbol has no mark,
so the pools holding it are left alone, and every other symbol is read on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick
from marginwatch.state.bad_records import BadRecords

TICK_ERRORS = (ValueError, KeyError, TypeError, ArithmeticError)


def parse_tick(symbol: str, raw: bytes, bad: BadRecords | None) -> Tick | None:
    """The stored tick, or ``None`` (reported) when it cannot be read or names another symbol."""
    try:
        tick = Tick.from_json(raw)
    except TICK_ERRORS as error:
        (bad or BadRecords()).report("tick", symbol, f"{error!r} in {raw[:80]!r}")
        return None
    if tick.symbol != symbol:
        (bad or BadRecords()).report("tick", symbol, f"the tick names {tick.symbol}")
        return None
    return tick


def read_ticks(client: redis.Redis, bad: BadRecords | None = None) -> dict[str, Tick]:
    """The newest readable tick of every symbol."""
    fields: Mapping[bytes, bytes] = client.hgetall(keys.PRICES)  # type: ignore[assignment]
    parsed = {
        symbol.decode(): parse_tick(symbol.decode(), raw, bad) for symbol, raw in fields.items()
    }
    return {symbol: tick for symbol, tick in parsed.items() if tick is not None}


def read_ticks_of(
    client: redis.Redis, symbols: Iterable[str], bad: BadRecords | None = None
) -> dict[str, Tick]:
    """The newest readable tick of each of ``symbols`` (one HMGET, only these parsed)."""
    wanted = sorted(set(symbols))
    if not wanted:
        return {}
    values: list[bytes | None] = client.hmget(keys.PRICES, wanted)  # type: ignore[assignment]
    parsed = {
        s: parse_tick(s, v, bad) for s, v in zip(wanted, values, strict=True) if v is not None
    }
    return {symbol: tick for symbol, tick in parsed.items() if tick is not None}


class TickCache:
    """The newest ticks, parsed by their stored JSON (which holds the sequence): between two
    reads only the symbols that ticked are parsed again."""

    def __init__(self, bad: BadRecords | None = None) -> None:
        self.parsed: dict[bytes, Tick | None] = {}
        self.bad = bad or BadRecords()

    def read(self, client: redis.Redis) -> dict[str, Tick]:
        """The newest readable tick of every symbol (one ``HGETALL``)."""
        fields: Mapping[bytes, bytes] = client.hgetall(keys.PRICES)  # type: ignore[assignment]
        old, parsed = self.parsed, {}
        for symbol, raw in fields.items():
            parsed[raw] = old[raw] if raw in old else parse_tick(symbol.decode(), raw, self.bad)
        self.parsed = parsed
        found = {symbol.decode(): parsed[raw] for symbol, raw in fields.items()}
        return {symbol: tick for symbol, tick in found.items() if tick is not None}

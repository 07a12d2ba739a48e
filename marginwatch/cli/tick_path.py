"""The path of ``marginwatch replay --ticks FILE``: the producer's replay format (CSV
``symbol,event_time,mark_price`` or JSON Lines, ``producer.replay``) read into moments.

Each row is validated as the producer validates a tick (the mark a finite positive decimal,
the event time whole milliseconds), its symbol must be one of the snapshot's, and the rows must
come in event-time order (equal times allowed). Consecutive rows of one event time form one
moment; a symbol named twice in a moment takes its later mark. A bad row is an ``InputError``
naming the file, the line and the field, e.g. ``crash.csv:7: mark_price: must be positive``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from marginwatch.base.ticks import Tick
from marginwatch.cli.errors import InputError
from marginwatch.engine.replay import Moment
from marginwatch.producer.replay import ReplayFileError, replay_reader
from marginwatch.producer.ticks import Malformed, RawTick, SourceItem
from marginwatch.producer.validation import (
    TickValidationError,
    parse_event_time_ms,
    parse_mark_price,
)


@dataclass(frozen=True)
class TickPath:
    """The moments of a file, and how many ticks they hold."""

    moments: list[Moment]
    ticks: int


def read_tick_path(path: Path, symbols: Collection[str]) -> TickPath:
    """The file's moments; every row checked against the snapshot's ``symbols``."""
    try:
        items = replay_reader(path)(path)
    except ReplayFileError as error:
        raise InputError(f"--ticks: {error}") from None
    ticks = list(validated(items, frozenset(symbols)))
    return TickPath(list(moments_of(ticks)), len(ticks))


def validated(items: Iterator[SourceItem], symbols: frozenset[str]) -> Iterator[Tick]:
    """Each row as a tick, in event-time order; else ``InputError`` naming line and field."""
    last: Tick | None = None
    for item in items:
        tick = tick_of(item, symbols)
        if last is not None and tick.event_time_ms < last.event_time_ms:
            before = f"before the row before ({last.event_time_ms})"
            raise InputError(f"{item.origin}: event_time: {tick.event_time_ms} is {before}")
        last = tick
        yield tick


def tick_of(item: SourceItem, symbols: frozenset[str]) -> Tick:
    """One row's tick."""
    if isinstance(item, Malformed):
        raise InputError(f"{item.origin}: {item.message}")
    try:
        symbol = symbol_of(item, symbols)
        mark = parse_mark_price(item.mark_price)
        return Tick(symbol, mark, parse_event_time_ms(item.event_time_ms))
    except TickValidationError as error:
        raise InputError(f"{item.origin}: {error}") from None


def symbol_of(item: RawTick, symbols: frozenset[str]) -> str:
    """The row's symbol, if the snapshot has it."""
    if not isinstance(item.symbol, str) or item.symbol not in symbols:
        raise TickValidationError(
            "unknown_symbol", f"symbol: {item.symbol!r} is not a symbol of the snapshot"
        )
    return item.symbol


def moments_of(ticks: list[Tick]) -> Iterator[Moment]:
    """Consecutive ticks of one event time as one moment (a later mark of a symbol wins)."""
    marks: dict[str, Decimal] = {}
    for index, tick in enumerate(ticks):
        marks[tick.symbol] = tick.mark_price
        following = ticks[index + 1] if index + 1 < len(ticks) else None
        if following is None or following.event_time_ms != tick.event_time_ms:
            yield Moment(tick.event_time_ms, marks)
            marks = {}

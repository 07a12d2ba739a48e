"""Replay of a recorded file of mark prices, paced like the original or as fast as possible.

Two formats, chosen by the file's suffix:

* ``.csv``: a header naming ``symbol,event_time,mark_price`` (in any order, other columns
  ignored), one tick per row;
* ``.jsonl`` (or ``.ndjson``): one JSON object per line with keys ``symbol``, ``event_time``
  (ms since the epoch) and ``mark_price`` (a string or a number, read as a decimal).

A row that is not a tick (bad JSON, a missing field) becomes a ``Malformed`` reject; the other
rows are passed on as they are and validated like any other tick.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from marginwatch.producer.pacing import DEFAULT_MAX_BATCH, paced_batches
from marginwatch.producer.ticks import Malformed, RawTick, Source, SourceItem, wall_clock_ms
from marginwatch.producer.validation import TickValidationError, parse_event_time_ms

FIELDS = ("symbol", "event_time", "mark_price")
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})


class ReplayFileError(ValueError):
    """A replay file that cannot be used at all: missing, unknown format, bad CSV header."""


def replay_source(
    path: Path,
    *,
    speed: float = 1.0,
    rebase_to_now: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Source:
    """The file's ticks; ``speed`` 2 plays twice as fast as recorded, 0 as fast as possible.

    With ``rebase_to_now``, event times are shifted so the first one is the replay's start.
    The file is checked now (``ReplayFileError``) and read as the source is iterated.
    """
    items = replay_reader(path)(path)
    timed = timed_items(items, speed=speed, rebase_to_now=rebase_to_now)
    return paced_batches(timed, paced=speed > 0, max_batch=max_batch)


def replay_reader(path: Path) -> Callable[[Path], Iterator[SourceItem]]:
    """The reader for ``path``'s format, after checking the file; else ``ReplayFileError``."""
    if not path.is_file():
        raise ReplayFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        check_csv_header(path)
        return csv_items
    if suffix in JSONL_SUFFIXES:
        return jsonl_items
    raise ReplayFileError(f"{path}: unknown format (expected a .csv or .jsonl file)")


def check_csv_header(path: Path) -> None:
    """Raise ``ReplayFileError`` unless the CSV header names every field of ``FIELDS``."""
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    missing = [name for name in FIELDS if name not in header]
    if missing:
        expected = ",".join(FIELDS)
        raise ReplayFileError(f"{path}: the CSV header must name {expected}; no {missing[0]}")


def csv_items(path: Path) -> Iterator[SourceItem]:
    """One item per data row of a CSV replay file."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield fields_item(row, f"{path.name}:{reader.line_num}")


def jsonl_items(path: Path) -> Iterator[SourceItem]:
    """One item per non-blank line of a JSONL replay file."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                yield jsonl_item(line, f"{path.name}:{line_number}")


def jsonl_item(line: str, origin: str) -> SourceItem:
    """The tick of one JSONL line (numbers read as decimals), or why it is none."""
    try:
        document = json.loads(line, parse_float=Decimal)
    except json.JSONDecodeError as error:
        return Malformed(f"not valid JSON ({error.msg})", origin)
    if not isinstance(document, dict):
        return Malformed("not a JSON object", origin)
    return fields_item(document, origin)


def fields_item(fields: Mapping[str | None, object], origin: str) -> SourceItem:
    """A raw tick from a row's ``symbol``, ``event_time`` and ``mark_price``, if all are there."""
    for name in FIELDS:
        if fields.get(name) is None:
            return Malformed(f"{name}: missing", origin)
    return RawTick(fields["symbol"], fields["mark_price"], fields["event_time"], origin)


def timed_items(
    items: Iterable[SourceItem], *, speed: float, rebase_to_now: bool
) -> Iterator[tuple[float, SourceItem]]:
    """``(due_seconds, item)``: event time since the first tick's, divided by ``speed``."""
    clock = ReplayClock(speed, rebase_to_now)
    return (clock.timed(item) for item in items)


class ReplayClock:
    """When each recorded item falls due, and its event time shifted if rebased to now.

    An item without a usable event time is due with the item before it.
    """

    def __init__(self, speed: float, rebase_to_now: bool) -> None:
        self.speed = speed
        self.rebase_to_now = rebase_to_now
        self.first_event_time_ms: int | None = None
        self.shift_ms = 0
        self.due_seconds = 0.0

    def timed(self, item: SourceItem) -> tuple[float, SourceItem]:
        """``(due_seconds, item)`` for the next item of the file."""
        event_time_ms = _event_time_or_none(item)
        if event_time_ms is None or not isinstance(item, RawTick):
            return self.due_seconds, item
        if self.first_event_time_ms is None:
            self.first_event_time_ms = event_time_ms
            self.shift_ms = wall_clock_ms() - event_time_ms if self.rebase_to_now else 0
        elapsed_seconds = (event_time_ms - self.first_event_time_ms) / 1000
        self.due_seconds = elapsed_seconds / self.speed if self.speed > 0 else 0.0
        return self.due_seconds, replace(item, event_time_ms=event_time_ms + self.shift_ms)


def _event_time_or_none(item: SourceItem) -> int | None:
    """The item's event time when it is a usable one."""
    if not isinstance(item, RawTick):
        return None
    try:
        return parse_event_time_ms(item.event_time_ms)
    except TickValidationError:
        return None

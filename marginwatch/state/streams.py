"""Reading the per-partition output streams (margin-call events, liquidations, dead letters)
as one: each partition has its own stream, on its own hash slot; entry ids are the time of
writing (``ms-seq``), so merging by id gives the order across partitions to the millisecond."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

StreamName = Callable[[int], str]  # partition -> stream, e.g. keys.liquidations


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (milliseconds, sequence)."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _decoded(entries: Sequence[Any]) -> list[tuple[str, dict[str, str]]]:
    return [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in entries]


def newest(
    client: redis.Redis, stream: StreamName, partitions: int, count: int
) -> list[tuple[str, dict[str, str]]]:
    """The ``count`` newest entries over every partition's stream, newest first."""
    pipe = client.pipeline(transaction=False)
    for partition in range(partitions):
        pipe.xrevrange(stream(partition), count=count)
    merged = [entry for reply in pipe.execute() for entry in _decoded(reply)]
    return sorted(merged, key=lambda entry: id_order(entry[0]), reverse=True)[:count]


def read_all(
    client: redis.Redis, stream: StreamName, partitions: int
) -> list[tuple[str, dict[str, str]]]:
    """Every entry of every partition's stream, oldest first (one ``XRANGE`` per stream)."""
    pipe = client.pipeline(transaction=False)
    for partition in range(partitions):
        pipe.xrange(stream(partition))
    merged = [entry for reply in pipe.execute() for entry in _decoded(reply)]
    return sorted(merged, key=lambda entry: id_order(entry[0]))

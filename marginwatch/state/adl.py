"""The partitions' ADL sketches in Redis: one hash per partition (``keys.adl_sketches``).

Its worker replaces the hash (one transaction) at most every ``ADL_INTERVAL_SECONDS``, as
Binance refreshes its ``adlQuantile``: field ``written_at`` (Unix seconds) and, per symbol and
side holding ranked positions, field ``SYMBOL:SIDE`` (``BTCUSDT:LONG``) with the sketch as JSON,
``{"count": n, "points": [ascending floats]}`` (``engine.adl.ScoreSketch``). A partition
without ranked positions of a symbol and side has no field for it: a count of 0.

A reader takes only the fields it needs from every partition (one pipelined ``HMGET`` each).
What it cannot read is reported, field by field, never raised.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from marginwatch.base import keys
from marginwatch.engine.adl import RankKey, ScoreSketch
from marginwatch.engine.types import PositionSide

ADL_INTERVAL_SECONDS = 30.0
WRITTEN_AT_FIELD = "written_at"


def sketch_field(key: RankKey) -> str:
    """``SYMBOL:SIDE``, the field of a symbol and side."""
    symbol, side = key
    return f"{symbol}:{side.value}"


def sketch_json(sketch: ScoreSketch) -> str:
    return json.dumps({"count": sketch.count, "points": list(sketch.points)})


def write_sketches(
    client: redis.Redis, partition: int, sketches: Mapping[RankKey, ScoreSketch], written_at: float
) -> None:
    """Replace the partition's sketches with ``sketches``, written at ``written_at``."""
    mapping: dict[FieldT, EncodableT] = {WRITTEN_AT_FIELD: repr(written_at)}
    mapping.update((sketch_field(key), sketch_json(sketch)) for key, sketch in sketches.items())
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.adl_sketches(partition))
    pipe.hset(keys.adl_sketches(partition), mapping=mapping)
    pipe.execute()


def parse_sketch(raw: bytes) -> ScoreSketch:
    """A stored sketch; ``ValueError`` naming what is wrong."""
    try:
        document: Any = json.loads(raw)
        count, points = document["count"], document["points"]
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"not a sketch ({error!r})") from None
    if not isinstance(count, int) or not isinstance(points, list):
        raise ValueError("count must be an integer and points a list")
    if not all(isinstance(p, int | float) and math.isfinite(p) for p in points):
        raise ValueError("points must be finite numbers")
    return ScoreSketch(count, tuple(float(p) for p in points))


@dataclass
class PartitionSketches:
    """What was read of one partition's sketches: when they were written, the sketches asked
    for (absent: a count of 0), and what could not be read (field: why)."""

    partition: int
    written_at: float | None = None  # None: no sketch written yet
    sketches: dict[RankKey, ScoreSketch] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def read_sketches(
    client: redis.Redis, partitions: int, wanted: Iterable[RankKey]
) -> list[PartitionSketches]:
    """Every partition's ``written_at`` and sketches of ``wanted``, one HMGET each."""
    wanted_keys = sorted(set(wanted), key=sketch_field)
    fields = [WRITTEN_AT_FIELD, *(sketch_field(key) for key in wanted_keys)]
    pipe = client.pipeline(transaction=False)
    for partition in range(partitions):
        pipe.hmget(keys.adl_sketches(partition), fields)
    replies: list[list[bytes | None]] = pipe.execute()
    return [parse_partition(p, wanted_keys, reply) for p, reply in enumerate(replies)]


def parse_partition(
    partition: int, wanted: Sequence[RankKey], reply: Sequence[bytes | None]
) -> PartitionSketches:
    """One partition's HMGET reply (``written_at`` first, then ``wanted``'s fields)."""
    found = PartitionSketches(partition)
    written_at, *raws = reply
    if written_at is None:
        return found
    try:
        found.written_at = float(written_at)
    except ValueError:
        found.unreadable[WRITTEN_AT_FIELD] = f"not a time: {written_at[:40]!r}"
    for key, raw in zip(wanted, raws, strict=True):
        try:
            found.sketches[key] = parse_sketch(raw) if raw is not None else ScoreSketch(0, ())
        except ValueError as error:
            found.unreadable[sketch_field(key)] = str(error)
    return found


def side_key(symbol: str, side_index: int) -> RankKey:
    """The rank key of the batch path's side index (0 long, 1 short)."""
    return symbol, (PositionSide.LONG, PositionSide.SHORT)[side_index]

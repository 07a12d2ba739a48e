"""Atomic publication of validated ticks to Redis, with one Lua script.

Per tick, the script (all or nothing for that tick, in one round trip per batch):

* refuses it (result ``0``) when ``keys.PRICES`` already holds a newer event time for the
  symbol: two producers, or a restarted one replaying old data, cannot move a price back;
* otherwise increments ``keys.TICK_SEQUENCE``, sets the symbol's field of ``keys.PRICES`` to
  ``Tick(...).to_json()`` with that sequence, and adds ``s``, ``p``, ``E``, ``seq`` to the
  ``keys.TICKS`` stream (trimmed to about ``stream_max_length`` entries); result: the sequence.

The hash value is built in Python with ``Tick.to_json`` and only the sequence is spliced in by
the script, so the stored JSON is exactly the contract's. Prices travel as decimal strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick

STALE = 0
DEFAULT_STREAM_MAX_LENGTH = 100_000
DEFAULT_TICKS_PER_CALL = 500
# The JSON is built with this sequence, then split around it; the script puts the real one in.
_SEQUENCE_PLACEHOLDER = 9_007_199_254_740_993

PUBLISH_SCRIPT = """
local function stored_event_time(stored)
  local ok, document = pcall(cjson.decode, stored)
  if ok and type(document) == 'table' and tonumber(document['E']) then
    return tonumber(document['E'])
  end
  return nil
end

local results = {}
for i = 2, #ARGV, 5 do
  local symbol, mark_price, event_time = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local stored = redis.call('HGET', KEYS[1], symbol)
  local stored_time = stored and stored_event_time(stored)
  if stored_time and tonumber(event_time) < stored_time then
    results[#results + 1] = 0
  else
    local sequence = string.format('%d', redis.call('INCR', KEYS[2]))
    redis.call('HSET', KEYS[1], symbol, ARGV[i + 3] .. sequence .. ARGV[i + 4])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*',
               's', symbol, 'p', mark_price, 'E', event_time, 'seq', sequence)
    results[#results + 1] = tonumber(sequence)
  end
end
return results
"""


@dataclass
class PublishOutcome:
    """Ticks published (with their sequence) and ticks the script refused as stale."""

    published: list[Tick] = field(default_factory=list)
    stale: list[Tick] = field(default_factory=list)


class Publisher:
    """Publishes batches of validated ticks; a batch larger than ``ticks_per_call`` is split
    into several script calls sent in one pipeline (one round trip)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream_max_length: int = DEFAULT_STREAM_MAX_LENGTH,
        ticks_per_call: int = DEFAULT_TICKS_PER_CALL,
    ) -> None:
        self.client = client
        self.stream_max_length = stream_max_length
        self.ticks_per_call = ticks_per_call
        self.script = client.register_script(PUBLISH_SCRIPT)

    def publish(self, ticks: Sequence[Tick]) -> PublishOutcome:
        """Publish ``ticks`` in order; stale ones (older than Redis holds) are not written."""
        if not ticks:
            return PublishOutcome()
        size = self.ticks_per_call
        chunks = [ticks[start : start + size] for start in range(0, len(ticks), size)]
        if len(chunks) == 1:
            results = [self._run_script(chunks[0], self.client)]
        else:
            pipeline = self.client.pipeline(transaction=False)
            for chunk in chunks:
                self._run_script(chunk, pipeline)
            results = pipeline.execute()
        return _outcome(ticks, [int(sequence) for result in results for sequence in result])

    def _run_script(self, chunk: Sequence[Tick], client: redis.Redis) -> Any:
        """The script's result for ``chunk`` (or, on a pipeline, the pipeline)."""
        arguments: list[str | int] = [self.stream_max_length]
        for tick in chunk:
            arguments.extend(script_arguments(tick))
        return self.script(
            keys=[keys.PRICES, keys.TICK_SEQUENCE, keys.TICKS], args=arguments, client=client
        )


def script_arguments(tick: Tick) -> tuple[str, str, int, str, str]:
    """The script's five arguments for ``tick``: symbol, price, event time, JSON around seq."""
    placeholder = str(_SEQUENCE_PLACEHOLDER)
    before, after = tick_json_around_sequence(tick, placeholder)
    return tick.symbol, str(tick.mark_price), tick.event_time_ms, before, after


def tick_json_around_sequence(tick: Tick, placeholder: str) -> tuple[str, str]:
    """``Tick.to_json()`` split at its sequence, checked to parse back with any sequence."""
    text = replace(tick, sequence=int(placeholder)).to_json()
    before, _, after = text.rpartition(placeholder)
    if Tick.from_json(before + "7" + after) != replace(tick, sequence=7):
        raise AssertionError(f"cannot place the sequence in {text!r}")
    return before, after


def _outcome(ticks: Sequence[Tick], sequences: Sequence[int]) -> PublishOutcome:
    """Pair each tick with the script's result: a sequence, or ``STALE``."""
    outcome = PublishOutcome()
    for tick, sequence in zip(ticks, sequences, strict=True):
        if sequence == STALE:
            outcome.stale.append(tick)
        else:
            outcome.published.append(replace(tick, sequence=sequence))
    return outcome

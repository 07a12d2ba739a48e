"""Guarded writes: commands that run, in one script, only if the values they were decided on
are still what Redis holds.

A batch of decisions is read in one pipelined round and written in another: each decision's
writes go in one script, with guards (a key's value, a hash field's value, or a key's absence)
checked first. A guard that fails leaves everything untouched, and the script says so: the
caller reads that decision's state again and decides again. This is ``WATCH``/``MULTI`` without
a round trip per decision, and each script is atomic as a transaction is.

The commands are recorded by ``Recorder``: redis-py's command methods (``set``, ``xadd``,
``zrem``, ...) queued on a pipeline that is never sent, whose words are kept. Every key a
script touches is on one partition's hash slot.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from redis.client import Pipeline

from marginwatch.state.connection import queue_script

ABSENT = "\x00absent"  # a guard's expected value when the key (or field) must not exist

# ARGV: the number of guards G, then G of (kind 'get'|'hget', key, field or '', expected
# value or ABSENT), then commands, each as a word count N followed by its N words. KEYS: every
# key touched (for routing). Returns 1 when the commands ran, 0 when a guard failed.
_GUARDED = """
local guards = tonumber(ARGV[1])
local at = 2
for _ = 1, guards do
  local value
  if ARGV[at] == 'hget' then
    value = redis.call('HGET', ARGV[at + 1], ARGV[at + 2])
  else
    value = redis.call('GET', ARGV[at + 1])
  end
  if value == false then value = ARGV[#ARGV] end
  if value ~= ARGV[at + 3] then return 0 end
  at = at + 4
end
while at < #ARGV do
  local words = tonumber(ARGV[at])
  redis.call(unpack(ARGV, at + 1, at + words))
  at = at + words + 1
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Guard:
    """``key`` (or its hash ``field``) must hold ``expected`` (``None``: must not exist)."""

    key: str
    expected: str | None
    field: str | None = None

    def words(self) -> list[str]:
        kind = "get" if self.field is None else "hget"
        return [
            kind,
            self.key,
            self.field or "",
            ABSENT if self.expected is None else self.expected,
        ]


class Recorder:
    """Records the commands queued on ``pipe`` (a pipeline of a client that never connects:
    redis-py's command methods build the words, which are kept instead of sent)."""

    def __init__(self) -> None:
        self.pipe: Pipeline = _unconnected().pipeline(transaction=False)

    @property
    def commands(self) -> list[list[str]]:
        return [[_word(word) for word in args] for args, _options in self.pipe.command_stack]


@functools.cache
def _unconnected() -> redis.Redis:
    return redis.Redis()  # connects on the first command sent: none is


def _word(word: object) -> str:
    return word.decode() if isinstance(word, bytes) else str(word)


@dataclass
class GuardedWrite:
    """The guards and the recorded commands of one decision."""

    guards: Sequence[Guard]
    recorder: Recorder = field(default_factory=Recorder)

    def queue(self, pipe: Pipeline) -> None:
        """Queue the guarded script on ``pipe``; its reply is 1 (written) or 0 (a guard
        failed)."""
        words = [str(len(self.guards))]
        for guard in self.guards:
            words += guard.words()
        commands = self.recorder.commands
        for command in commands:
            words += [str(len(command)), *command]
        named = {command[1] for command in commands if len(command) > 1}  # each names its key first
        touched = sorted(named | {guard.key for guard in self.guards})
        queue_script(pipe, _GUARDED, touched, *words, ABSENT)

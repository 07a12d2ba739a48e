"""The action message: what a partition worker asks the executor to do, made in one place.

An action names a kind, a pool of an account (and the account's partition, which decides the
executor's queue and every key the action touches) at the account version the worker saw, and
the tick that triggered it (its sequence and event time, for latency). The executor re-checks every
action against the newest state before it acts, so the message carries what identifies the
work, never a decision. On the wire it is a JSON object (``to_message`` / ``from_message``)
with a schema version; only the Celery layer (``marginwatch.runtime.celery_app``) knows which
task carries which kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1


class ActionKind(StrEnum):
    """What the executor is asked to do; the values are the metrics' ``action`` labels."""

    MARGIN_CALL = "margin_call"
    MARGIN_CALL_RESOLVED = "margin_call_resolved"
    LIQUIDATION = "liquidate"


class ActionMessageError(ValueError):
    """A message that is not an action; the text names the field."""


@dataclass(frozen=True, slots=True)
class Action:
    """One action: ``kind`` for ``pool`` of ``account_id`` (in ``partition``) seen at
    ``account_version``.

    ``tick_sequence`` and ``tick_event_time_ms`` are the newest tick among the pool's symbols
    when the worker decided (0 when none); ``detected_ratio`` is the ratio it decided on
    (``None``: margin balance <= 0), as a decimal string: exact, or the float screen's where
    its error bound made the screen certain (``engine.batch``).
    """

    kind: ActionKind
    partition: int
    account_id: str
    pool: str
    account_version: int
    tick_sequence: int = 0
    tick_event_time_ms: int = 0
    detected_ratio: str | None = None

    def to_message(self) -> dict[str, Any]:
        """The JSON object sent to the executor."""
        return {
            "schema": SCHEMA_VERSION,
            "kind": self.kind.value,
            "partition": self.partition,
            "account_id": self.account_id,
            "pool": self.pool,
            "account_version": self.account_version,
            "tick_sequence": self.tick_sequence,
            "tick_event_time_ms": self.tick_event_time_ms,
            "detected_ratio": self.detected_ratio,
        }

    @classmethod
    def from_message(cls, message: Any) -> Action:
        """Parse a message; ``ActionMessageError`` names the first field that is wrong."""
        if not isinstance(message, Mapping):
            raise ActionMessageError(f"message: expected an object, got {type(message).__name__}")
        if message.get("schema") != SCHEMA_VERSION:
            found = message.get("schema")
            raise ActionMessageError(f"schema: expected {SCHEMA_VERSION}, got {found!r}")
        try:
            kind = ActionKind(str(message.get("kind")))
        except ValueError:
            raise ActionMessageError(f"kind: unknown action {message.get('kind')!r}") from None
        ratio = message.get("detected_ratio")
        if ratio is not None and not isinstance(ratio, str):
            raise ActionMessageError("detected_ratio: expected a decimal string or null")
        return cls(kind, _count(message, "partition"), _text(message, "account_id"),
                   _text(message, "pool"), _count(message, "account_version"),
                   _count(message, "tick_sequence"), _count(message, "tick_event_time_ms"),
                   ratio)  # fmt: skip


def _text(message: Mapping[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value:
        raise ActionMessageError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def _count(message: Mapping[str, Any], name: str) -> int:
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ActionMessageError(f"{name}: expected a non-negative integer, got {value!r}")
    return value

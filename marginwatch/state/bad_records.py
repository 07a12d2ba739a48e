"""Records in Redis that cannot be used (a malformed tick, a corrupt account hash, a malformed
action message): skipped, counted and logged once each, never raised, so one bad entry never
stops the evaluation or the execution of the others."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("marginwatch.bad_records")


@dataclass
class BadRecords:
    """Where readers report what they skip; ``on_count`` is told each one's kind (metrics)."""

    on_count: Callable[[str], None] | None = None
    counts: Counter[str] = field(default_factory=Counter)
    logged: set[tuple[str, str]] = field(default_factory=set)

    def report(self, kind: str, key: str, reason: str) -> None:
        """One bad record: counted; logged the first time its key is met."""
        self.counts[kind] += 1
        if self.on_count is not None:
            self.on_count(kind)
        if (kind, key) not in self.logged:
            self.logged.add((kind, key))
            log.warning("bad %s skipped (%s): %s", kind, key, reason)

"""The partition rule: which partition an account belongs to, and partition ranges.

An account's partition is ``CRC-32(account id as UTF-8) mod P`` (the unsigned CRC-32 of zlib,
IEEE 802.3), where P is the deployment's partition count (``MARGINWATCH_PARTITIONS``, recorded
in Redis at ``keys.PARTITION_COUNT``). Every key of an account, its events, its actions and its
share of the insurance fund live under its partition's Redis Cluster hash tag ``{pN}``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from marginwatch.base.settings import ConfigurationError


def partition_of(account_id: str, partitions: int) -> int:
    """Stable partition of an account: CRC-32 of its id modulo ``partitions``."""
    return zlib.crc32(account_id.encode()) % partitions


def parse_partitions(spec: str, partition_count: int) -> list[int]:
    """``"0-7"``, ``"1,3,5"`` or ``"2"`` into partition numbers, each below ``partition_count``."""
    chosen: set[int] = set()
    try:
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            chosen.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ConfigurationError(f"--partitions: not a list of ranges: {spec!r}") from None
    outside = sorted(p for p in chosen if not 0 <= p < partition_count)
    if not chosen or outside:
        raise ConfigurationError(
            f"--partitions: {outside or spec} not within 0-{partition_count - 1} "
            f"(MARGINWATCH_PARTITIONS={partition_count})"
        )
    return sorted(chosen)


def format_partitions(partitions: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 6]`` as ``"0-3,6"`` (what ``parse_partitions`` reads); ``""`` for none."""
    spans: list[list[int]] = []
    for number in sorted(set(partitions)):
        if spans and number == spans[-1][-1] + 1:
            spans[-1].append(number)
        else:
            spans.append([number])
    return ",".join(f"{s[0]}-{s[-1]}" if len(s) > 1 else str(s[0]) for s in spans)

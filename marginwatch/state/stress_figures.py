"""The partitions' stress figures in Redis: one JSON document per partition
(``mw:{pN}:stress``, ``base.stress_metrics``), replaced by each computation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

from marginwatch.base import keys
from marginwatch.base.stress_metrics import PartitionStress, parse_stress_json, stress_json

log = logging.getLogger("marginwatch.stress")


def write_partition_stress(client: redis.Redis, partition: int, figures: PartitionStress) -> None:
    """Replace the partition's figures."""
    client.set(keys.partition_stress(partition), stress_json(figures))


def read_partition_stress(
    client: redis.Redis, partitions: Sequence[int]
) -> dict[int, PartitionStress]:
    """The figures of the partitions that have any, one pipelined GET per partition; a
    document that cannot be read is left out (and logged)."""
    pipe = client.pipeline(transaction=False)
    for partition in partitions:
        pipe.get(keys.partition_stress(partition))
    found: dict[int, PartitionStress] = {}
    for partition, text in zip(partitions, pipe.execute(), strict=True):
        if text is None:
            continue
        try:
            found[partition] = parse_stress_json(text)
        except (ValueError, KeyError, TypeError) as error:
            log.warning("partition %d: stress figures unreadable (%s)", partition, error)
    return found

"""The insurance fund: one ledger per partition, summed.

Each partition's ledger (``keys.insurance_fund(p)``, a decimal string) changes only in the
liquidation transaction that causes the change, on that partition's hash slot. A ledger may go
negative (its partition's deficits exceeded its fees); the fund is the sum of the ledgers.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import redis

from marginwatch.base import keys


def read_ledgers(client: redis.Redis, partitions: Sequence[int]) -> dict[int, Decimal]:
    """Each partition's ledger (0 when unset), one pipelined GET per partition."""
    pipe = client.pipeline(transaction=False)
    for partition in partitions:
        pipe.get(keys.insurance_fund(partition))
    values: list[bytes | None] = pipe.execute()
    return {
        p: Decimal(v.decode()) if v else Decimal(0) for p, v in zip(partitions, values, strict=True)
    }


def read_insurance_fund(client: redis.Redis, partition_count: int) -> Decimal:
    """The fund: the sum of every partition's ledger."""
    return sum(read_ledgers(client, range(partition_count)).values(), Decimal(0))


def credit_ledger(client: redis.Redis, partition: int, amount: Decimal) -> Decimal:
    """Add ``amount`` (may be negative) to a partition's ledger under ``WATCH``, exactly (no
    float on the way); returns the new balance. For funding the insurance fund from outside (an
    operator, a test); liquidations change their ledger inside their own transaction."""
    key = keys.insurance_fund(partition)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                current = pipe.get(key)
                balance = (Decimal(current.decode()) if current else Decimal(0)) + amount  # type: ignore[union-attr]
                pipe.multi()
                pipe.set(key, str(balance))
                pipe.execute()
                return balance
            except redis.WatchError:
                continue

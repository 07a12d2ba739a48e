"""Every Redis key and stream name of marginwatch, each written once, here.

All keys share the ``mw:`` prefix so one Redis can be shared with other software.
"""

from __future__ import annotations

PREFIX = "mw:"

# Deployment configuration.
PARTITION_COUNT = PREFIX + "config:partitions"

# Prices: latest mark per symbol (hash symbol -> tick JSON), the global tick sequence, and the
# change-notice stream that wakes the partition dispatchers.
PRICES = PREFIX + "prices"
TICK_SEQUENCE = PREFIX + "prices:seq"
TICKS = PREFIX + "ticks"

# Accounts: one hash per account (fields ``version`` and ``state``), the members of each
# partition, and each partition's stream of changed accounts.
_ACCOUNT = PREFIX + "account:{account_id}"
_PARTITION_MEMBERS = PREFIX + "partition:{partition}:accounts"
_PARTITION_CHANGES = PREFIX + "partition:{partition}:changes"
_PARTITION_PENDING = PREFIX + "partition:{partition}:pending"
_PARTITION_STATUS = PREFIX + "partition:{partition}:status"
_PARTITION_EVALUATED = PREFIX + "partition:{partition}:evaluated"

# Account events written by the venue's trading core, and those rejected.
ACCOUNT_EVENTS = PREFIX + "account-events"
ACCOUNT_EVENTS_GROUP = "marginwatch"
DEAD_LETTERS = PREFIX + "account-events:dead"

# Actions and their outcomes.
MARGIN_CALL_EVENTS = PREFIX + "margin-calls"
LIQUIDATIONS = PREFIX + "liquidations"
INSURANCE_FUND = PREFIX + "insurance-fund"
_EPISODE = PREFIX + "episode:{account_id}:{pool}"
_IDEMPOTENCY = PREFIX + "done:{key}"
_ACCOUNT_LOCK = PREFIX + "lock:{account_id}"


def account(account_id: str) -> str:
    return _ACCOUNT.format(account_id=account_id)


def partition_members(partition: int) -> str:
    return _PARTITION_MEMBERS.format(partition=partition)


def partition_changes(partition: int) -> str:
    return _PARTITION_CHANGES.format(partition=partition)


def partition_pending(partition: int) -> str:
    return _PARTITION_PENDING.format(partition=partition)


def partition_status(partition: int) -> str:
    return _PARTITION_STATUS.format(partition=partition)


def partition_evaluated(partition: int) -> str:
    """The newest tick sequence a finished evaluation of the partition had read."""
    return _PARTITION_EVALUATED.format(partition=partition)


def episode(account_id: str, pool: str) -> str:
    return _EPISODE.format(account_id=account_id, pool=pool)


def idempotency(key: str) -> str:
    return _IDEMPOTENCY.format(key=key)


def account_lock(account_id: str) -> str:
    return _ACCOUNT_LOCK.format(account_id=account_id)

"""Every Redis key and stream name of marginwatch, each written once, here.

All keys share the ``mw:`` prefix so one Redis can be shared with other software. Everything
about an account (its state, events, episodes, actions' idempotency, its share of the insurance
fund) and about a partition lives under the partition's Redis Cluster hash tag, ``mw:{p7}:…``,
so every script and transaction touches one hash slot. The few global keys are the deployment's
partition count and the prices (tag ``{prices}``: the producer writes its three keys together);
they are never written together with partition keys.
"""

from __future__ import annotations

PREFIX = "mw:"

# Deployment configuration.
PARTITION_COUNT = PREFIX + "config:partitions"
# A random token written once (SET NX): a Redis that comes back without it lost its data.
GENERATION = PREFIX + "config:generation"

# Prices: latest mark per symbol (hash symbol -> tick JSON), the global tick sequence, and the
# change-notice stream that wakes the partition dispatchers.
PRICES = PREFIX + "{prices}:marks"
TICK_SEQUENCE = PREFIX + "{prices}:seq"
TICKS = PREFIX + "{prices}:ticks"

# The consumer group of every partition's account-event stream.
ACCOUNT_EVENTS_GROUP = "marginwatch"
WEBHOOK_DELIVERERS_GROUP = "deliverers"

_PARTITION = PREFIX + "{{p{partition}}}:"  # mw:{p7}:
# Accounts: one hash per account (fields ``version`` and ``state``), the members of each
# partition, and each partition's stream of changed accounts.
_ACCOUNT = "account:{account_id}"
_PARTITION_MEMBERS = "accounts"
_PARTITION_CHANGES = "changes"
_PARTITION_PENDING = "pending"
_PARTITION_STATUS = "status"
_PARTITION_EVALUATED = "evaluated"
_PARTITION_STRESS = "stress"  # the partition's stress figures (base.stress_metrics)
# Account events written by the venue's trading core, and those rejected; the applier's lease.
_ACCOUNT_EVENTS = "account-events"
_DEAD_LETTERS = "account-events:dead"
_APPLIER_LEASE = "applier:lease"
_APPLIER_FENCE = "applier:fence"
# Actions and their outcomes; the partition's ledger of the insurance fund.
_MARGIN_CALL_EVENTS = "margin-calls"
_LIQUIDATIONS = "liquidations"
_INSURANCE_FUND = "insurance-fund"
_EPISODE = "episode:{account_id}:{pool}"
_EPISODES = "episodes"  # set of "account|pool" of the partition's open episodes
_DUE_LIQUIDATIONS = "due-liquidations"  # zset "account|pool" -> ms when first sent
_DUE_LIQUIDATION_ACTIONS = "due-liquidation-actions"
_REPLICATED = "replicated"  # counter written before WAIT (state.connection.wait_for_replicas)
_IDEMPOTENCY = "done:{key}"
_WEBHOOK_OUTBOX = "webhook-outbox"  # stream: one entry per event and URL
_WEBHOOK_RETRIES = "webhook-outbox:retries"  # zset outbox entry id -> ms of its next attempt
_WEBHOOK_ATTEMPTS = "webhook-outbox:attempts"  # hash outbox entry id -> failed attempts
_WEBHOOK_DEAD_LETTERS = "webhook-outbox:dead"  # stream: deliveries given up, with the reason
_ADL_SKETCHES = "adl-sketches"  # hash "SYMBOL:SIDE" -> the sketch of its ADL scores

# The layout before partitions carried hash tags (read only by ``marginwatch migrate``).
LEGACY_PRICES = PREFIX + "prices"
LEGACY_TICK_SEQUENCE = PREFIX + "prices:seq"
LEGACY_TICKS = PREFIX + "ticks"
LEGACY_ACCOUNT_EVENTS = PREFIX + "account-events"
LEGACY_DEAD_LETTERS = PREFIX + "account-events:dead"
LEGACY_MARGIN_CALL_EVENTS = PREFIX + "margin-calls"
LEGACY_LIQUIDATIONS = PREFIX + "liquidations"
LEGACY_INSURANCE_FUND = PREFIX + "insurance-fund"
LEGACY_ACCOUNT_PREFIX = PREFIX + "account:"  # + account id
LEGACY_EPISODE_PREFIX = PREFIX + "episode:"  # + account id + ":" + pool
LEGACY_IDEMPOTENCY_PREFIX = PREFIX + "done:"  # + key
LEGACY_LOCK_PREFIX = PREFIX + "lock:"  # + account id (no longer used)
LEGACY_PARTITION_PREFIX = PREFIX + "partition:"  # + partition + ":" + name
# The rest of the names of a legacy partition key, after the partition number.
LEGACY_PARTITION_NAMES = {
    "accounts": _PARTITION_MEMBERS,
    "changes": _PARTITION_CHANGES,
    "pending": _PARTITION_PENDING,
    "status": _PARTITION_STATUS,
    "evaluated": _PARTITION_EVALUATED,
}
# Where ``marginwatch migrate`` keeps the old account-event stream, for audit.
MIGRATED_ACCOUNT_EVENTS = PREFIX + "migrated:account-events"
# Celery's queues before they were per partition (``marginwatch migrate`` wants them empty).
LEGACY_ACTION_QUEUES = ("marginwatch.actions", "marginwatch.margin-calls")


def partition_prefix(partition: int) -> str:
    """``mw:{pN}:``, the prefix (and hash tag) of every key of partition ``N``."""
    return _PARTITION.format(partition=partition)


def _of(partition: int, name: str) -> str:
    return partition_prefix(partition) + name


def account(partition: int, account_id: str) -> str:
    return _of(partition, _ACCOUNT.format(account_id=account_id))


def partition_members(partition: int) -> str:
    return _of(partition, _PARTITION_MEMBERS)


def partition_changes(partition: int) -> str:
    return _of(partition, _PARTITION_CHANGES)


def partition_pending(partition: int) -> str:
    return _of(partition, _PARTITION_PENDING)


def partition_status(partition: int) -> str:
    return _of(partition, _PARTITION_STATUS)


def partition_evaluated(partition: int) -> str:
    """The newest tick sequence a finished evaluation of the partition had read."""
    return _of(partition, _PARTITION_EVALUATED)


def partition_stress(partition: int) -> str:
    """The figures of the partition's last computation of the configured stress scenarios (a
    JSON document, ``base.stress_metrics``)."""
    return _of(partition, _PARTITION_STRESS)


def partition_key(partition: int, name: str) -> str:
    """A partition key by its name after the prefix (``LEGACY_PARTITION_NAMES`` values)."""
    return _of(partition, name)


def account_events(partition: int) -> str:
    """The stream the trading core writes the partition's accounts' events to."""
    return _of(partition, _ACCOUNT_EVENTS)


def dead_letters(partition: int) -> str:
    return _of(partition, _DEAD_LETTERS)


def applier_lease(partition: int) -> str:
    """Who applies the partition's account events now (value: fencing token and owner)."""
    return _of(partition, _APPLIER_LEASE)


def applier_fence(partition: int) -> str:
    """The partition's fencing counter: incremented by every new lease."""
    return _of(partition, _APPLIER_FENCE)


def margin_call_events(partition: int) -> str:
    return _of(partition, _MARGIN_CALL_EVENTS)


def liquidations(partition: int) -> str:
    return _of(partition, _LIQUIDATIONS)


def insurance_fund(partition: int) -> str:
    """The partition's ledger of the insurance fund (a decimal string; may be negative)."""
    return _of(partition, _INSURANCE_FUND)


def episode(partition: int, account_id: str, pool: str) -> str:
    return _of(partition, _EPISODE.format(account_id=account_id, pool=pool))


def partition_episodes(partition: int) -> str:
    """The pools of the partition in a margin-call episode, as ``account|pool`` members."""
    return _of(partition, _EPISODES)


def due_liquidations(partition: int) -> str:
    """Liquidations sent and not yet executed or skipped: ``account|pool`` scored by the time
    (ms) the first was sent."""
    return _of(partition, _DUE_LIQUIDATIONS)


def due_liquidation_actions(partition: int) -> str:
    """The newest liquidation action sent for each due pool: ``account|pool`` -> its message
    (JSON), so an executor can take every due liquidation of the partition at once."""
    return _of(partition, _DUE_LIQUIDATION_ACTIONS)


def idempotency(partition: int, key: str) -> str:
    return _of(partition, _IDEMPOTENCY.format(key=key))


def webhook_outbox(partition: int) -> str:
    """The partition's webhook deliveries to make: one entry per event and URL, appended by
    the script that records the event, consumed by group ``WEBHOOK_DELIVERERS_GROUP``."""
    return _of(partition, _WEBHOOK_OUTBOX)


def webhook_retries(partition: int) -> str:
    """Outbox entries whose delivery failed, scored by when (ms) the next attempt is due."""
    return _of(partition, _WEBHOOK_RETRIES)


def webhook_attempts(partition: int) -> str:
    """Failed attempts so far of each outbox entry awaiting a retry."""
    return _of(partition, _WEBHOOK_ATTEMPTS)


def webhook_dead_letters(partition: int) -> str:
    """Outbox entries given up after the last attempt, with the last error."""
    return _of(partition, _WEBHOOK_DEAD_LETTERS)


def partition_replicated(partition: int) -> str:
    """A counter an executor increments on the partition's primary right before ``WAIT``, so
    the wait covers the liquidation it just wrote there."""
    return _of(partition, _REPLICATED)


def adl_sketches(partition: int) -> str:
    """The sketches of the partition's ADL scores, one field per symbol and side, and when its
    worker wrote them (``state.adl``)."""
    return _of(partition, _ADL_SKETCHES)

"""The webhook deliverer: drains its partitions' outboxes (``state/outbox.py``), at least once.

Each pass, for each partition: take over deliveries pending for longer than
``MARGINWATCH_WEBHOOK_CLAIM_AFTER_SECONDS`` on another deliverer (it died; keep the setting above
``READ_COUNT`` attempts of ``webhooks.TIMEOUT_SECONDS``, or a slow live one is doubled), read new
ones, and take the retries that are due; POST each (``webhooks.deliver``); a 2xx acknowledges it,
a failure schedules the next attempt after ``retry_delay_seconds`` (exponential, with jitter),
and the last failed attempt (``MARGINWATCH_WEBHOOK_MAX_ATTEMPTS``) dead-letters it. The event id
is stable across attempts, so a receiver deduplicates a delivery made twice (a deliverer that
died after the POST and before its acknowledgement).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from marginwatch.base import crash
from marginwatch.base.settings import Settings
from marginwatch.executor import webhooks
from marginwatch.state import outbox
from marginwatch.state.outbox import Entry

log = logging.getLogger("marginwatch.webhooks")

READ_COUNT = 4  # attempts of webhooks.TIMEOUT_SECONDS each: 20 s at worst, below the claim time
RETRY_LEASE_SECONDS = 30.0
IDLE_POLL_SECONDS = 0.2
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0


def retry_delay_seconds(failed_attempts: int, rng: random.Random) -> float:
    """``min(300, 2^(n-1))`` seconds after the n-th failure, times a jitter in [0.5, 1)."""
    ceiling = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2.0 ** (failed_attempts - 1))
    return ceiling * (0.5 + rng.random() / 2)


@dataclass
class Deliverer:
    """One deliverer's resources; ``count(result)`` counts delivered/retried/failed."""

    client: redis.Redis
    settings: Settings
    partitions: Sequence[int]
    consumer: str
    count: Callable[[str], None]
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time
    on_round: Callable[[], None] = lambda: None  # before each pass and each attempt (heartbeat)


def webhook_document(partition: int, fields: dict[str, str]) -> dict[str, Any]:
    """The document a receiver gets (docs/schemas/webhook.schema.json) from an outbox entry,
    with a stable ``event_id``: the partition and the event's margin-call stream entry."""
    return {
        "event_id": f"p{partition}:{fields['event_entry']}",
        "kind": fields["kind"],
        "account_id": fields["account_id"],
        "pool": fields["pool"],
        "partition": partition,
        "margin_ratio": fields["margin_ratio"] or None,
        "tick_sequence": int(fields["tick_sequence"]),
        "tick_event_time_ms": int(fields["tick_event_time_ms"]),
        "time_ms": int(fields["emitted_ms"]),
        "event": json.loads(fields["event"]),
    }


def deliver_pass(deliverer: Deliverer) -> int:
    """One pass over every partition's outbox; how many attempts it made."""
    return sum(deliver_partition(deliverer, partition) for partition in deliverer.partitions)


def deliver_partition(deliverer: Deliverer, partition: int) -> int:
    """Stranded, new and due deliveries of one partition, each attempted once."""
    client, consumer = deliverer.client, deliverer.consumer
    now_ms = int(deliverer.clock() * 1000)
    claim_after_ms = int(deliverer.settings.webhook_claim_after_seconds * 1000)
    entries = outbox.claim_stale(client, partition, consumer, claim_after_ms, READ_COUNT)
    entries += outbox.read_new(client, partition, consumer, READ_COUNT)
    entries += outbox.take_due_retries(client, partition, now_ms,
                                       int(RETRY_LEASE_SECONDS * 1000), READ_COUNT)  # fmt: skip
    for entry in entries:
        deliverer.on_round()
        attempt(deliverer, partition, entry)
    return len(entries)


def attempt(deliverer: Deliverer, partition: int, entry: Entry) -> None:
    """POST one delivery; acknowledge it, or schedule its retry, or dead-letter it."""
    entry_id, fields = entry
    try:
        body = json.dumps(webhook_document(partition, fields)).encode()
        webhooks.deliver(fields["url"], body, deliverer.settings.webhook_secret, deliverer.clock())
        crash.at("webhooks:after-post")
    except (webhooks.WebhookDeliveryError, KeyError, ValueError) as error:
        failed(deliverer, partition, entry, str(error) or repr(error))
        return
    outbox.delivered(deliverer.client, partition, entry_id)
    deliverer.count("delivered")


def failed(deliverer: Deliverer, partition: int, entry: Entry, error: str) -> None:
    """Retry later, or give up after the last attempt."""
    client, entry_id = deliverer.client, entry[0]
    attempts = outbox.attempts_of(client, partition, entry_id) + 1
    if attempts >= deliverer.settings.webhook_max_attempts:
        log.warning("webhook %s p%s given up after %d attempts: %s", entry_id, partition,
                    attempts, error)  # fmt: skip
        outbox.dead_letter(client, partition, entry, attempts, error)
        deliverer.count("failed")
        return
    due = deliverer.clock() + retry_delay_seconds(attempts, deliverer.rng)
    outbox.retry_later(client, partition, entry_id, attempts, int(due * 1000))
    deliverer.count("retried")


def run_deliverer(deliverer: Deliverer, stop: threading.Event) -> None:
    """Deliver until ``stop``, pausing briefly whenever a pass found nothing."""
    for partition in deliverer.partitions:
        outbox.ensure_group(deliverer.client, partition)
    while not stop.is_set():
        deliverer.on_round()
        if deliver_pass(deliverer) == 0:
            stop.wait(IDLE_POLL_SECONDS)

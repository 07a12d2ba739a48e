"""The pipeline benchmark: observation."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.pipeline.config import HISTOGRAMS, SCRAPED
from benchmarks.pipeline.daemons import Daemons
from benchmarks.pipeline.proc import cpu_seconds, rss_kib
from marginwatch.base import keys
from marginwatch.runtime.celery_app import executor_queues, partition_queue, queue_length


@dataclass
class Probe:
    """What the benchmark reads its samples from: the state (one Redis or a cluster; its
    primaries' URLs for memory and keyspace notifications) and Celery's broker."""

    client: redis.Redis
    app: Celery
    primaries: Sequence[str]
    partitions: int
    broker_redis: redis.Redis | None  # the broker when it is a Redis (its unacked hash)


class EvaluationCounter:
    """Times of every write of each partition's ``evaluated`` key (keyspace notifications, on
    every primary: a key's notification comes from the node that holds it)."""

    def __init__(self, primaries: Sequence[str], partitions: int) -> None:
        self.channels = {
            f"__keyspace@0__:{keys.partition_evaluated(p)}".encode(): p for p in range(partitions)
        }
        self.clients = [redis.Redis.from_url(url) for url in primaries]  # their pools hold pubsub
        self.pubsubs = []
        for client in self.clients:
            client.config_set("notify-keyspace-events", "K$")
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(*self.channels)
            self.pubsubs.append(pubsub)
        self.times: list[list[float]] = [[] for _ in range(partitions)]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stopping.is_set():
            for pubsub in self.pubsubs:
                message = pubsub.get_message(timeout=0.2 / len(self.pubsubs))
                if message is not None and message["channel"] in self.channels:
                    self.times[self.channels[message["channel"]]].append(time.time())

    def counts(self, since: float, until: float) -> list[int]:
        return [sum(since <= t <= until for t in times) for times in self.times]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        for pubsub in self.pubsubs:
            pubsub.close()


def scrape(port: int, names: Sequence[str]) -> dict[str, float] | None:
    """Sums of the named samples on ``http://127.0.0.1:port/metrics`` over their labels, and of
    each ``HISTOGRAMS`` bucket as ``name_bucket:le``; None when not served or none is there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    sums = dict.fromkeys(names, 0.0)
    found = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.endswith("_bucket") and family.name in HISTOGRAMS:
                name = f"{name}:{sample.labels['le']}"
                sums.setdefault(name, 0.0)
            if name in sums:
                sums[name] += sample.value
                found = found or sample.name in names
    return sums if found else None


def scrape_all(ports: Sequence[int]) -> dict[str, float] | None:
    """The ``SCRAPED`` sums over every worker; None unless every one serves them."""
    found = [scrape(port, SCRAPED) for port in ports]
    if any(sums is None for sums in found):
        return None
    names = {name for sums in found if sums for name in sums}
    return {name: sum(s.get(name, 0.0) for s in found if s) for name in names}


def metric_quantile(
    before: Mapping[str, float], after: Mapping[str, float], name: str, q: float
) -> float:
    """The upper bound of the histogram bucket holding quantile ``q`` between two scrapes."""
    prefix = f"{name}_bucket:"
    bounds = sorted((float(k[len(prefix) :]), k) for k in after if k.startswith(prefix))
    total = after[f"{name}_count"] - before[f"{name}_count"]
    for bound, key in bounds:
        if total and after[key] - before.get(key, 0.0) >= q * total:
            return bound
    return float("nan")


def metric_mean(before: Mapping[str, float], after: Mapping[str, float], name: str) -> float:
    """Mean of a histogram's observations between two scrapes (nan if none)."""
    count = after[f"{name}_count"] - before[f"{name}_count"]
    return (after[f"{name}_sum"] - before[f"{name}_sum"]) / count if count else float("nan")


@dataclass(frozen=True)
class Sample:
    """One second's look at Redis and the daemons."""

    at: float
    tick_sequence: int
    evaluated: tuple[int, ...]
    partition_queued: int
    actions_queued: int
    unacked: int
    pending_flags: int
    redis_used: int
    rss_kib: dict[str, int]
    cpu_seconds: dict[str, float]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def max_lag(self) -> int:
        return self.tick_sequence - min(self.evaluated) if self.evaluated else 0


def take_sample(probe: Probe, pids: Mapping[str, int]) -> Sample:
    partitions = probe.partitions
    pipe = probe.client.pipeline(transaction=False)  # on a cluster: split by node
    pipe.get(keys.TICK_SEQUENCE)
    for p in range(partitions):
        pipe.get(keys.partition_evaluated(p))
        pipe.get(keys.partition_pending(p))
    reply = pipe.execute()
    evaluated, pending = reply[1::2], reply[2::2]
    queues = [*(partition_queue(p) for p in range(partitions)), *executor_queues(range(partitions))]
    lengths = [queue_length(probe.app, name) for name in queues]
    unacked = int(probe.broker_redis.hlen("unacked")) if probe.broker_redis is not None else 0  # type: ignore[arg-type]
    return Sample(
        at=time.time(),
        tick_sequence=int(reply[0] or 0),
        evaluated=tuple(int(v or 0) for v in evaluated),
        partition_queued=sum(lengths[:partitions]),
        actions_queued=sum(lengths[partitions:]),
        unacked=unacked,
        pending_flags=sum(v is not None for v in pending),
        redis_used=used_memory(probe.primaries),
        rss_kib={name: rss_kib(pid) for name, pid in pids.items()},
        cpu_seconds={name: cpu_seconds(pid) for name, pid in pids.items()},
    )


def used_memory(primaries: Sequence[str]) -> int:
    """Bytes used by the state's primaries, together."""
    total = 0
    for url in primaries:
        info: Any = redis.Redis.from_url(url).info("memory")
        total += int(info["used_memory"])
    return total


def cpu_shares(samples: Sequence[Sample]) -> dict[str, float]:
    """Each process's CPU time per second of wall time, over the samples it was alive in."""
    shares = {}
    for name in samples[-1].cpu_seconds if samples else ():
        alive = [s for s in samples if s.cpu_seconds.get(name, 0.0) > 0]
        if len(alive) > 1:
            used = alive[-1].cpu_seconds[name] - alive[0].cpu_seconds[name]
            shares[name] = used / (alive[-1].at - alive[0].at)
    return shares


def sample_while(
    running: Callable[[], bool], take: Callable[[], Sample], daemons: Daemons
) -> list[Sample]:
    """One sample a second while ``running()``."""
    samples = []
    next_at = time.monotonic()
    while running():
        daemons.check_alive()
        samples.append(take())
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    return samples


@dataclass(frozen=True)
class Trend:
    """A series over the run: means of its first and last thirds, slope, the verdict."""

    first: float
    last: float
    peak: float
    slope_per_minute: float
    growing: bool


def trend(times: Sequence[float], values: Sequence[float], floor: float) -> Trend:
    """Growing: the last third's mean exceeds the first's by more than ``floor`` and by half."""
    third = max(1, len(values) // 3)
    first, last = float(np.mean(values[:third])), float(np.mean(values[-third:]))
    slope = float(np.polyfit(times, values, 1)[0]) * 60 if len(values) > 1 else 0.0
    growing = last > first + floor and last > 1.5 * first
    return Trend(first, last, float(max(values)), slope, growing)

"""The chaos run: the book through the held levels while daemons are killed, crash at named
points, Redis restarts, ticks storm and malformed inputs pour in; then every check.

Each level is held (the feed repeats it) until what must happen at it has happened and nothing
is in flight, so the expectation does not depend on timing; the faults are timed inside the
levels, where actions are in flight.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.chaos import book, checks, inputs
from benchmarks.chaos.checks import check
from benchmarks.chaos.supervisor import Supervisor
from benchmarks.chaos.world import Feed, Receiver, Redis, start_receiver
from marginwatch.base import keys
from marginwatch.engine.brackets import default_tables
from marginwatch.runtime.celery_app import executor_queues
from marginwatch.state.accounts import read_account, store_accounts
from marginwatch.state.fund import credit_ledger

KINDS = book.KINDS


@dataclass(frozen=True)
class ChaosConfig:
    directory: Path
    per_cohort: int = 8
    partitions: int = 2
    invalid_events: int = 4_000
    bad_ticks: int = 4_000
    bad_snapshots: int = 2_000
    deposits_per_account: int = 3
    random_kills: int = 0  # extra kills of random daemons at random moments, per level
    step_timeout_seconds: float = 90.0
    seed: int = 7


@dataclass
class ChaosReport:
    """What the run did and found."""

    accounts: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)
    optional_margin_calls: tuple[int, int] = (0, 0)  # (sent, allowed)
    recovery_seconds: dict[str, float] = field(default_factory=dict)
    redelivery: dict[str, tuple[int, float]] = field(default_factory=dict)  # (actions, seconds)
    malformed: Counter[str] = field(default_factory=Counter)
    webhooks: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Run:
    """One chaos run's moving parts."""

    def __init__(self, config: ChaosConfig) -> None:
        self.config, self.report = config, ChaosReport()
        self.rng = random.Random(config.seed)
        self.tables = dict(default_tables())
        self.accounts = book.book(config.per_cohort)
        self.stories = book.expected(self.accounts, self.tables)
        self.redis = Redis(config.directory / "redis")
        self.client = self.redis.client()
        self.receiver, url = start_receiver()
        env = {"MARGINWATCH_REDIS_URL": self.redis.url,
               "MARGINWATCH_PARTITIONS": str(config.partitions),
               "MARGINWATCH_WEBHOOK_URLS": json.dumps([url]),
               "MARGINWATCH_WEBHOOK_SECRET": "chaos",
               "MARGINWATCH_WEBHOOK_CLAIM_AFTER_SECONDS": "2",
               # Short, so that tasks taken by killed executors come back during the run (and
               # meet the idempotency of what was done meanwhile).
               "MARGINWATCH_VISIBILITY_TIMEOUT_SECONDS": "5"}  # fmt: skip
        self.supervisor = Supervisor({**os.environ, **env}, config.directory)
        self.feed: Feed | None = None

    # -- waiting ---------------------------------------------------------------------------

    def until(self, done: Callable[[], bool], what: str) -> float:
        """Wait for ``done``; the seconds waited. Raises ``TimeoutError`` naming ``what``."""
        started = time.monotonic()
        while not done():
            if time.monotonic() - started > self.config.step_timeout_seconds:
                raise TimeoutError(f"{what}: not within {self.config.step_timeout_seconds} s; "
                                   f"seen {dict(self.counts())}")  # fmt: skip
            time.sleep(0.1)
        return time.monotonic() - started

    def counts(self) -> Counter[str]:
        """Margin calls, resolutions and liquidations recorded so far."""
        found: Counter[str] = Counter()
        for p in range(self.config.partitions):
            for stream in (keys.margin_call_events(p), keys.liquidations(p)):
                for _id, fields in self.client.xrange(stream):
                    found[fields[b"kind"].decode()] += 1
        return found

    def due_by(self, level: int) -> Counter[str]:
        """Actions every pool must have had by the end of ``level`` (optional ones left out)."""
        due: Counter[str] = Counter()
        for told in self.stories.values():
            due.update(kind for at, kind in told.events if at <= level)
        return due

    def drained(self) -> bool:
        """No action queued and no liquidation due."""
        partitions = range(self.config.partitions)
        queued = sum(self.client.llen(q) for q in executor_queues(partitions))
        due = sum(self.client.zcard(keys.due_liquidations(p)) for p in partitions)
        return queued == 0 and due == 0

    def level_done(self, level: int) -> Callable[[], bool]:
        def done() -> bool:
            seen, due = self.counts(), self.due_by(level)
            return all(seen[k] >= due[k] for k in KINDS) and self.drained()

        return done

    def some_done(self, level: int, kind: str, fraction: float) -> Callable[[], bool]:
        before, after = self.due_by(level - 1)[kind], self.due_by(level)[kind]
        return lambda: self.counts()[kind] >= before + fraction * (after - before)

    def in_flight(self) -> set[tuple[str, str, str]]:
        """(kind, account, pool) of the actions taken by executors and not yet acknowledged
        (the Redis transport's ``unacked`` hash; it also holds those of executors killed
        earlier, until their visibility timeout), read just before a kill."""
        kinds = {"marginwatch.margin_calls": "margin_call",
                 "marginwatch.margin_call_resolved": "resolved",
                 "marginwatch.liquidate": "liquidation"}  # fmt: skip
        found = set()
        for raw in self.client.hvals("unacked"):
            message = json.loads(raw)[0]
            task = message["headers"].get("task")
            if task not in kinds:
                continue
            args = json.loads(base64.b64decode(message["body"]))[0]
            actions = args[0] if isinstance(args[0], list) else [args[0]]
            found.update((kinds[task], a["account_id"], a["pool"]) for a in actions)
        return found

    def kill_in_flight(self, name: str, what: str) -> float:
        """Kill ``name`` with actions in flight; record how long after the kill the last of
        them was executed (by another executor, or the restarted one); when it was killed."""
        flying = self.in_flight() - self.recorded_actions()  # not those executed already
        killed_at = self.supervisor.kill(name)
        self.until(lambda: flying <= self.recorded_actions(), f"{what}: the actions in flight")
        self.report.redelivery[what] = (len(flying), time.time() - killed_at)
        return killed_at

    def recorded_actions(self) -> set[tuple[str, str, str]]:
        return {(kind, account, pool) for account, pool, kind in checks.recorded(self)}

    def kill_later(self, name: str, delay: float) -> None:
        threading.Timer(delay, self.supervisor.kill, args=(name,)).start()

    def random_kills(self) -> None:
        names = sorted(self.supervisor.daemons)
        for _ in range(self.config.random_kills):
            self.kill_later(self.rng.choice(names), self.rng.uniform(0.0, 2.0))

    # -- the run ---------------------------------------------------------------------------

    def start(self) -> None:
        """The book, the fund and the first level in Redis; the daemons, some armed."""
        store_accounts(self.client, self.accounts, self.config.partitions)
        credit_ledger(self.client, 0, book.FUND)
        self.feed = Feed(self.client, book.LEVELS[0])
        add = self.supervisor.add
        add("worker-0", "worker", "--partitions", "0", crash_points=["worker:after-send"])
        add("worker-1", "worker", "--partitions", f"1-{self.config.partitions - 1}")
        add("executor-a", "executor")
        add("executor-b", "executor",
            crash_points=["executor:after-margin-calls", "webhooks:after-post"])  # fmt: skip
        self.supervisor.watch()
        evaluated = [keys.partition_evaluated(p) for p in range(self.config.partitions)]
        self.until(lambda: all(self.client.mget(evaluated)), "the first evaluations")

    def hold(self, level: int) -> None:
        assert self.feed is not None
        self.feed.hold(book.LEVELS[level])
        self.random_kills()

    def level_1(self) -> None:
        """Margin calls; the worker of partition 1 killed right after the tick, restarted
        armed after the pending flags; worker 0 crashes after its first send."""
        self.supervisor.arm("worker-1", "dispatcher:after-pending-flags")
        self.hold(1)
        self.kill_later("worker-1", self.rng.uniform(0.0, 0.2))
        self.until(self.level_done(1), "level 1: first margin calls")

    def level_2(self) -> None:
        """Resolutions under a 10x tick storm; an executor killed with some in flight; the
        real producer replays a file of malformed ticks."""
        assert self.feed is not None
        self.feed.interval = 0.1
        self.hold(2)
        self.until(self.some_done(2, "resolved", 0.25), "level 2: some resolutions")
        killed_at = self.kill_in_flight("executor-a", "executor kill, resolutions in flight")
        self.until(self.level_done(2), "level 2: every resolution")
        self.report.recovery_seconds["executor kill, resolutions in flight"] = (
            time.time() - killed_at
        )
        self.feed.interval = 1.0
        self.bad_ticks()

    def level_3(self) -> None:
        """Second episodes: a worker killed right after the tick, both executors killed with
        margin calls in flight (each restarted armed to crash after its next liquidation)."""
        for name in ("executor-a", "executor-b"):
            self.supervisor.arm(name, "executor:after-liquidation")
        self.hold(3)
        self.kill_later("worker-0", self.rng.uniform(0.0, 0.2))
        self.kill_later("executor-a", self.rng.uniform(0.0, 0.3))
        self.kill_later("executor-b", self.rng.uniform(0.0, 0.3))
        self.until(self.level_done(3), "level 3: second margin calls")
        self.bad_snapshots()

    def level_4(self) -> None:
        """Liquidations: Redis killed and restarted from its AOF with some in flight, then an
        executor killed with more in flight."""
        self.hold(4)
        self.until(self.some_done(4, "liquidation", 0.25), "level 4: some liquidations")
        self.redis.kill_and_restart()
        self.report.faults["Redis kill -9 and restart"] += 1
        self.until(self.some_done(4, "liquidation", 0.5), "level 4: liquidations after Redis")
        killed_at = self.kill_in_flight("executor-b", "executor kill, liquidations in flight")
        self.until(self.level_done(4), "level 4: every liquidation")
        self.report.recovery_seconds["executor kill, liquidations in flight"] = (
            time.time() - killed_at
        )
        self.until(self.webhooks_delivered, "every webhook delivered")
        self.until(self.account_events_handled, "every account event handled")
        self.until(lambda: self.client.hlen("unacked") == 0 and self.drained(),
                   "every task taken by a killed executor redelivered")  # fmt: skip

    def account_events_handled(self) -> bool:
        """The applier's group has read every entry (its last delivered id is the stream's
        last; its lag is unknown after a restart) and acknowledged it."""
        for p in range(self.config.partitions):
            stream = keys.account_events(p)
            last = self.client.xinfo_stream(stream)["last-generated-id"]
            groups = self.client.xinfo_groups(stream)
            if not groups or any(g["pending"] or g["last-delivered-id"] != last for g in groups):
                return False
        return True

    def webhooks_delivered(self) -> bool:
        ids = set(self.event_ids())
        with Receiver.lock:
            delivered = set(Receiver.deliveries)
        return ids <= delivered and self.outbox_empty()

    def outbox_empty(self) -> bool:
        for p in range(self.config.partitions):
            pending = self.client.xpending(keys.webhook_outbox(p), keys.WEBHOOK_DELIVERERS_GROUP)
            if pending["pending"] or self.client.zcard(keys.webhook_retries(p)):
                return False
        return True

    def event_ids(self) -> list[str]:
        return [f"p{p}:{entry_id.decode()}" for p in range(self.config.partitions)
                for entry_id, _f in self.client.xrange(keys.margin_call_events(p))]  # fmt: skip

    # -- malformed inputs ------------------------------------------------------------------

    def account_events(self) -> inputs.AccountEvents:
        healthy = [a.account_id for a in self.accounts if a.account_id.startswith("B")]
        written = inputs.write_account_events(
            self.client, self.config.partitions, healthy, self.config.invalid_events,
            self.config.deposits_per_account,
        )  # fmt: skip
        self.report.malformed["account events"] += written.invalid
        return written

    def bad_ticks(self) -> None:
        """The real producer replays malformed ticks: all refused, none published, no crash."""
        path = inputs.bad_tick_file(self.config.directory / "bad-ticks.csv",
                                    self.config.bad_ticks, time.time_ns() // 1_000_000)  # fmt: skip
        command = [sys.executable, "-m", "marginwatch", "producer", "--source", "replay",
                   "--file", str(path), "--speed", "0"]  # fmt: skip
        ran = subprocess.run(command, env=self.supervisor.env, capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
        summary = ran.stderr.strip().splitlines()[-1] if ran.stderr.strip() else ""
        rejects = sum(int(part.split()[-1]) for part in summary.split("rejects: ")[-1].split(", ")
                      if part.split()[-1].isdigit())  # fmt: skip
        self.report.malformed["ticks (producer replay)"] += rejects
        if ran.returncode != 0 or "published 0 ticks" not in summary:
            self.report.problems.append(f"producer: exit {ran.returncode}, {summary!r}")
        if rejects != self.config.bad_ticks:
            self.report.problems.append(f"producer refused {rejects} of {self.config.bad_ticks}")

    def bad_snapshots(self) -> None:
        """Malformed snapshots parsed (refused naming the field), and one given to the real
        ``accounts load``: refused, nothing stored."""
        refused, problems = inputs.snapshots_refused(self.config.bad_snapshots)
        self.report.malformed["snapshots"] += refused
        self.report.problems.extend(problems[:5])
        path = self.config.directory / "bad-snapshot.json"
        path.write_text(inputs.BAD_SNAPSHOTS[4], encoding="utf-8")
        before = read_account(self.client, "B0", self.config.partitions)
        command = [sys.executable, "-m", "marginwatch", "accounts", "load", str(path)]
        ran = subprocess.run(command, env=self.supervisor.env, capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
        after = read_account(self.client, "B0", self.config.partitions)
        lines = ran.stderr.strip().splitlines()
        if ran.returncode == 0 or len(lines) != 1 or "quantity" not in lines[0]:
            self.report.problems.append(
                f"accounts load of a bad snapshot: {ran.returncode} {lines}"
            )
        if before is None or after is None or before.version > after.version:
            self.report.problems.append("accounts load of a bad snapshot changed B0")

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        self.supervisor.stop()
        self.receiver.shutdown()
        self.receiver.server_close()


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """The whole run, then the checks; the report (``problems`` empty when all held)."""
    started = time.monotonic()
    run = Run(config)
    try:
        run.start()
        events = run.account_events()
        for level in (run.level_1, run.level_2, run.level_3, run.level_4):
            level()
        time.sleep(1.0)  # anything late would show now
    except TimeoutError as error:
        run.report.problems.append(str(error))
        events = None
    finally:
        run.stop()
    try:
        check(run, events)
    finally:
        run.redis.stop()
    run.report.seconds = time.monotonic() - started
    return run.report

"""The replay makes the live pipeline's decisions: the same book and the same path of held
levels (``tests/replay_book.py``: a crash and its recovery) run once through the live pipeline
(redis-server, the real producer, two partition workers, the executor, as processes) and once
through ``marginwatch replay``, then compared: per (account, pool), the same margin calls,
resolutions and liquidations at the same levels in the same order, the same fees, deficits and
cross wallets after each liquidation, and the same insurance fund at the end.

Each level is held until it is settled: every partition evaluated it, and nothing is queued,
taken and unacknowledged, due or pending. Then the same marks are published again (a new event
time): the evaluation that reads them has read every account the executor changed, so its
actions (a cross pool resolved by an isolated remainder) are settled before the next level.
Both publications are rows of the path the replay reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from bisect import bisect_right
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from marginwatch.base import keys
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.runtime.celery_app import executor_queues, partition_queue
from marginwatch.state import streams
from marginwatch.state.accounts import store_accounts
from marginwatch.state.fund import credit_ledger, read_insurance_fund
from tests.daemons import Daemons
from tests.polling import wait_for
from tests.replay_book import FEE_SETTINGS, LEVELS, book, marks, write_snapshot

D = Decimal
PARTITIONS = 4
FUND = D(1_000_000)
SCRIPT = Path(sys.executable).parent / "marginwatch"
# (account, pool) -> [(level, kind, fee, deficit covered, cross wallet after)]
KIND_ORDER = ("margin_call", "resolved", "liquidation", "skipped")
Timeline = dict[tuple[str, str], list[tuple[int, str, str, str, str]]]


class LivePipeline:
    """The daemons of one deployment, and the path published to it so far (as CSV rows)."""

    def __init__(self, url: str, directory: Path) -> None:
        self.client = redis.Redis.from_url(url)
        self.directory = directory
        fees = {f"MARGINWATCH_{name}": value for name, value in FEE_SETTINGS.items()}
        self.env = {"MARGINWATCH_REDIS_URL": url, "MARGINWATCH_PARTITIONS": str(PARTITIONS), **fees}
        self.daemons = Daemons(self.env, directory)
        self.rows = ["symbol,event_time,mark_price"]
        self.event_time_ms = time.time_ns() // 1_000_000 - 60_000  # recent, in order
        self.level_starts: list[int] = []  # the first tick sequence of each level

    def publish(self, level: int) -> int:
        """Publish the level's marks (one event time) with the real producer; its newest tick
        sequence."""
        self.event_time_ms += 1_000
        rows = [f"{s},{self.event_time_ms},{p}" for s, p in marks(level).items()]
        self.rows += rows
        path = self.directory / f"level-{len(self.rows)}.csv"
        path.write_text("\n".join([self.rows[0], *rows]) + "\n", encoding="utf-8")
        subprocess.run([SCRIPT, "producer", "--source", "replay", "--file", str(path), "--speed",
                        "0"], env={**os.environ, **self.env}, check=True, timeout=60,
                       capture_output=True)  # fmt: skip
        return int(self.client.get(keys.TICK_SEQUENCE) or 0)

    def hold(self, level: int) -> None:
        """Publish the level, wait until it is settled; again with the same marks."""
        self.level_starts.append(int(self.client.get(keys.TICK_SEQUENCE) or 0) + 1)
        for _publication in range(2):
            self.wait_settled(self.publish(level), f"level {level} settled")

    def wait_settled(self, sequence: int, what: str) -> None:
        wait_for(lambda: self.settled(sequence), lambda: f"{what}: {self.unsettled(sequence)}",
                 timeout=120)  # fmt: skip

    def settled(self, sequence: int) -> bool:
        return not self.unsettled(sequence)

    def unsettled(self, sequence: int) -> dict[str, int]:
        """What is still to be done for tick ``sequence``: partitions not yet evaluated at it,
        messages queued or taken and unacknowledged, liquidations due, evaluations pending."""
        evaluated = [self.client.get(keys.partition_evaluated(p)) for p in range(PARTITIONS)]
        queues = [*executor_queues(range(PARTITIONS)), *map(partition_queue, range(PARTITIONS))]
        found = {
            "not evaluated": sum(mark is None or int(mark) < sequence for mark in evaluated),
            "queued": sum(int(self.client.llen(queue)) for queue in queues),
            "unacknowledged": int(self.client.hlen("unacked")),
            "due": sum(int(self.client.zcard(keys.due_liquidations(p))) for p in range(PARTITIONS)),
            "pending": sum(int(self.client.exists(keys.partition_pending(p)))
                           for p in range(PARTITIONS)),
        }  # fmt: skip
        return {what: count for what, count in found.items() if count}

    def level_of(self, tick_sequence: str) -> int:
        return bisect_right(self.level_starts, int(tick_sequence)) - 1

    def timeline(self) -> Timeline:
        """What the live pipeline did, from its margin-call and liquidation streams, each pool's
        entries by level, then as written (entry ids of the same millisecond: the margin call
        first, as the executor takes it first)."""
        entries = [
            (self.level_of(entry["tick_sequence"]), streams.id_order(entry_id)[0],
             KIND_ORDER.index(entry["kind"]), entry)
            for stream in (keys.margin_call_events, keys.liquidations)
            for entry_id, entry in streams.read_all(self.client, stream, PARTITIONS)
        ]  # fmt: skip
        found: Timeline = {}
        for level, _ms, _kind, entry in sorted(entries, key=lambda e: e[:3]):
            found.setdefault((entry["account_id"], entry["pool"]), []).append(
                (level, entry["kind"], *money(entry))
            )
        return found


def money(entry: dict[str, Any]) -> tuple[str, str, str]:
    """A liquidation's fee, deficit covered and cross wallet after, normalised (else empty)."""
    if entry["kind"] != "liquidation":
        return "", "", ""
    figures = (entry["fee"], entry["deficit_covered"], entry["cross_wallet_after"])
    return tuple(format(D(figure).normalize(), "f") for figure in figures)  # type: ignore[return-value]


@pytest.fixture
def live(redis_server: RedisServer, tmp_path: Path) -> Iterator[LivePipeline]:
    """The book loaded, the fund seeded, level 0 published, executor and workers running."""
    redis.Redis.from_url(redis_server.url).flushdb()
    pipeline = LivePipeline(redis_server.url, tmp_path)
    store_accounts(pipeline.client, book(), PARTITIONS)
    credit_ledger(pipeline.client, 0, FUND)
    pipeline.level_starts.append(1)
    sequence = pipeline.publish(0)
    pipeline.daemons.start("executor", "executor")
    pipeline.daemons.start("worker-a", "worker", "--partitions", "0-1")
    pipeline.daemons.start("worker-b", "worker", "--partitions", "2-3")
    pipeline.wait_settled(sequence, "the first evaluation of every partition")
    yield pipeline
    pipeline.daemons.stop_all()


def replayed(live: LivePipeline, directory: Path) -> tuple[Timeline, dict[str, Any]]:
    """``marginwatch replay --json`` of the book and of every row the live pipeline was sent,
    with the same settings; its timeline by pool, and the document."""
    snapshot = write_snapshot(directory / "book.json", book())
    ticks = directory / "path.csv"
    ticks.write_text("\n".join(live.rows) + "\n", encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("MARGINWATCH_")}
    result = subprocess.run([SCRIPT, "replay", "--snapshot", str(snapshot), "--ticks", str(ticks),
                             "--insurance-fund", str(FUND), "--json"],
                            env={**env, **live.env}, capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    found: Timeline = {}
    for event in document["events"]:
        level = event["moment"] // 2  # moment 0 (the snapshot), 1 (level 0), then two a level
        found.setdefault((event["account_id"], event["pool"]), []).append(
            (level, event["kind"], *money(event))
        )
    return found, document


def test_the_replay_makes_the_live_pipelines_decisions(live: LivePipeline, tmp_path: Path) -> None:
    """Every level of the crash and its recovery held in the live pipeline, then the replay of
    the same path: the same timeline per pool, the same fund."""
    for level in range(1, len(LEVELS)):
        live.hold(level)
    expected, document = replayed(live, tmp_path)
    assert live.timeline() == expected
    assert read_insurance_fund(live.client, PARTITIONS) == D(document["insurance_fund_end"])
    assert_the_path_exercises_every_rule(document)


def assert_the_path_exercises_every_rule(document: dict[str, Any]) -> None:
    """The comparison means something: margin calls, resolutions (one on a remainder returned
    to the cross wallet), liquidations with their whole fee, with a capped fee and in deficit."""
    totals = document["totals"]
    assert totals["margin_call"] >= 20
    assert totals["resolved"] >= 6
    assert totals["liquidation"] >= 15
    assert totals["skipped"] == 0
    liquidations = [e for e in document["events"] if e["kind"] == "liquidation"]
    assert any(D(e["fee"]) > 0 and D(e["cross_wallet_after"]) > 0 for e in liquidations)
    assert any(D(e["deficit_covered"]) > 0 for e in liquidations)
    moments = {e["moment"] for e in document["events"] if e["kind"] == "resolved"}
    assert moments & {e["moment"] for e in liquidations}  # resolved on a remainder
    assert D(document["insurance_fund_end"]) != FUND

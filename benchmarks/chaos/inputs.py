"""Inputs for the chaos run at every boundary: valid and invalid account events, a replay file
of malformed ticks for the real producer, and malformed snapshots."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from marginwatch.base import keys
from marginwatch.base.partitions import partition_of
from marginwatch.base.snapshot import SnapshotError, parse_snapshot


@dataclass(frozen=True)
class AccountEvents:
    """What was written to the account-event streams."""

    valid: int  # distinct events (each also written a second time, with its event id)
    invalid: int
    deposits: dict[str, int]  # account id -> its valid deposits of 1


def _invalid_event_texts(partitions: int) -> Iterator[tuple[int, str]]:
    """(partition stream, text) of events the applier must refuse, cycling through kinds."""
    home = partition_of("B0", partitions)
    other = (home + 1) % partitions
    deposit = {"account_id": "B0", "type": "deposit"}
    kinds: list[tuple[int, str]] = [
        (home, "{not json"),
        (home, "[1, 2]"),
        (home, json.dumps({"type": "deposit", "amount": "1"})),
        (home, json.dumps({**deposit, "type": "teleport"})),
        (home, json.dumps({**deposit, "amount": "-5"})),
        (home, json.dumps({**deposit, "amount": "abc"})),
        (home, json.dumps({**deposit, "amount": "0"})),
        (home, json.dumps({**deposit, "type": "withdraw", "amount": "1000000000"})),
        (other, json.dumps({**deposit, "amount": "1"})),  # another partition's account
        (partition_of("nobody", partitions),
         json.dumps({"account_id": "nobody", "type": "deposit", "amount": "1"})),
    ]  # fmt: skip
    return itertools.cycle(kinds)


def write_account_events(
    client: redis.Redis, partitions: int, healthy: Sequence[str], invalid: int, per_account: int
) -> AccountEvents:
    """``per_account`` deposits of 1 to each healthy account, each written twice (the second
    copy a duplicate by event id), interleaved with ``invalid`` events the applier refuses."""
    bad = _invalid_event_texts(partitions)
    pipe = client.pipeline(transaction=False)
    valid = 0
    for n in range(per_account):
        for account_id in healthy:
            text = json.dumps({"account_id": account_id, "type": "deposit", "amount": "1",
                               "event_id": f"chaos-{account_id}-{n}"})  # fmt: skip
            stream = keys.account_events(partition_of(account_id, partitions))
            pipe.xadd(stream, {"event": text})
            pipe.xadd(stream, {"event": text})
            valid += 1
    for _ in range(invalid):
        partition, text = next(bad)
        pipe.xadd(keys.account_events(partition), {"event": text})
    pipe.execute()
    return AccountEvents(valid, invalid, dict.fromkeys(healthy, per_account))


BAD_TICK_ROWS = (
    "BTCUSDT,{t},abc",
    "BTCUSDT,{t},-5",
    "BTCUSDT,{t},0",
    "BTCUSDT,{t},NaN",
    "BTCUSDT,{t},Infinity",
    "BTCUSDT,yesterday,48000",
    "BTCUSDT,,48000",
    ",{t},48000",
    "btc usdt,{t},48000",
)


def bad_tick_file(path: Path, rows: int, event_time_ms: int) -> Path:
    """A replay CSV of ``rows`` ticks the producer must reject (no valid row)."""
    cycle = itertools.cycle(BAD_TICK_ROWS)
    lines = ["symbol,event_time,mark_price"]
    lines += [next(cycle).format(t=event_time_ms + i) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _snapshot(wallet: str = "1", account_id: str = "x", **position: object) -> str:
    """A snapshot of one account, with one BTCUSDT position changed by ``position``."""
    positions = []
    if position:
        base = {"symbol": "BTCUSDT", "quantity": "1", "entry_price": "1", "leverage": 20,
                "margin_mode": "cross"}  # fmt: skip
        positions = [{**base, **position}]
    account = {"account_id": account_id, "cross_wallet_balance": wallet, "positions": positions}
    return json.dumps({"mark_prices": {}, "accounts": [account]})


BAD_SNAPSHOTS = (
    "{not json",
    json.dumps({"mark_prices": {}, "accounts": "none"}),
    _snapshot(account_id=""),
    _snapshot(wallet="abc"),
    _snapshot(quantity="0"),
    _snapshot(leverage=0),
    _snapshot(margin_mode="isolated"),
    _snapshot(symbol="NOPEUSDT"),
)


def snapshots_refused(count: int) -> tuple[int, list[str]]:
    """Parse ``count`` malformed snapshots; how many were refused with a message naming a
    field (or the document), and the problems (accepted, or refused without saying where)."""
    refused, problems = 0, []
    for text in itertools.islice(itertools.cycle(BAD_SNAPSHOTS), count):
        try:
            parse_snapshot(text)
        except SnapshotError as error:
            named = "accounts" in str(error) or "snapshot" in str(error)
            refused += named
            if not named:
                problems.append(f"snapshot refused without naming the field: {error}")
        else:
            problems.append(f"malformed snapshot accepted: {text[:80]}")
    return refused, problems

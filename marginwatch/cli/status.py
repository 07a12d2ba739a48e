"""``marginwatch status [ACCOUNT]``: live figures from Redis.

Without an account: the riskiest pools that the partition workers last saw, the newest margin
calls and liquidations over every partition, and the insurance fund (the sum of the partitions'
ledgers). With one: the account's full report (the
``evaluate`` contract) at the newest marks, computed exactly, with each position's ADL quantile
ranked venue-wide against the partitions' sketches (``cli.status_adl``).
"""

from __future__ import annotations

import time
from typing import TextIO

import redis

from marginwatch.base import keys
from marginwatch.base.exits import EXIT_OK
from marginwatch.base.report import render_report
from marginwatch.base.settings import ConfigurationError, Settings, bracket_tables, redis_url
from marginwatch.cli.status_adl import venue_quantiles
from marginwatch.engine.exact import evaluate_account
from marginwatch.state import streams
from marginwatch.state.accounts import read_account
from marginwatch.state.connection import open_redis
from marginwatch.state.fund import read_insurance_fund
from marginwatch.state.prices import read_ticks

RISKIEST_SHOWN = 10
EVENTS_SHOWN = 5


def print_status(settings: Settings, account_id: str | None, out: TextIO) -> int:
    client = open_redis(redis_url(settings))
    if account_id is None:
        out.write(overview(client, settings.partitions))
        return EXIT_OK
    out.write(account_report(client, settings, account_id) + "\n")
    return EXIT_OK


def account_report(client: redis.Redis, settings: Settings, account_id: str) -> str:
    """The account's report at the newest marks, as JSON."""
    stored = read_account(client, account_id, settings.partitions)
    if stored is None:
        raise ConfigurationError(f"account {account_id!r} is not in Redis")
    ticks = read_ticks(client)
    marks = {symbol: tick.mark_price for symbol, tick in ticks.items()}
    missing = sorted({p.symbol for p in stored.account.positions} - set(marks))
    if missing:
        raise ConfigurationError(f"no mark price yet for {', '.join(missing)}")
    tables = bracket_tables(settings)
    report = evaluate_account(stored.account, marks, tables, settings.thresholds, settings.venue)
    quantiles, adl = venue_quantiles(client, settings.partitions, report, time.time())
    return render_report([report], [quantiles], adl).to_json()


def riskiest(client: redis.Redis, partitions: int, count: int) -> list[tuple[str, float]]:
    """The ``count`` riskiest pools over all partitions, as ``("account|pool", ratio)``."""
    pipe = client.pipeline(transaction=False)
    for partition in range(partitions):
        pipe.zrevrange(keys.partition_status(partition), 0, count - 1, withscores=True)
    replies: list[list[tuple[bytes, float]]] = pipe.execute()
    pools = [(member.decode(), score) for reply in replies for member, score in reply]
    return sorted(pools, key=lambda pool: -pool[1])[:count]


def recent(
    client: redis.Redis, stream: streams.StreamName, partitions: int, count: int
) -> list[dict[str, str]]:
    """The newest ``count`` entries over every partition's stream, newest first."""
    return [fields for _id, fields in streams.newest(client, stream, partitions, count)]


def overview(client: redis.Redis, partitions: int) -> str:
    """A text summary: riskiest pools, newest margin calls and liquidations, fund, last tick."""
    sequence = client.get(keys.TICK_SEQUENCE)
    fund = read_insurance_fund(client, partitions)
    lines = [
        f"newest tick sequence: {int(sequence or 0)}   insurance fund: {fund} USDT",
        "",
        "riskiest pools (margin ratio):",
    ]
    for member, score in riskiest(client, partitions, RISKIEST_SHOWN):
        ratio = "no margin left" if score >= 1e9 else f"{score:.2%}"
        lines.append(f"  {member.replace('|', '  '):<40} {ratio}")
    lines += ["", "newest margin calls:"]
    lines += [f"  {e['kind']:<12} {e['account_id']}  {e['pool']}  ratio {e['margin_ratio']}"
              for e in recent(client, keys.margin_call_events, partitions,
                              EVENTS_SHOWN)]  # fmt: skip
    lines += ["", "newest liquidations:"]
    for entry in recent(client, keys.liquidations, partitions, EVENTS_SHOWN):
        detail = (
            entry.get("reason")
            or f"fee {entry.get('fee')}, fund {entry.get('insurance_fund_change')}"
        )
        lines.append(f"  {entry['kind']:<12} {entry['account_id']}  {entry['pool']}  {detail}")
    return "\n".join(lines) + "\n"

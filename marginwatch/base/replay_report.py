"""What ``marginwatch replay`` prints: the timeline as a table, or the JSON document.

The document (``--json``)::

    {"snapshot": "book.json", "ticks_file": "crash.csv",
     "accounts": 2, "pools": 3, "positions": 5, "ticks": 12, "moments": 6,
     "read_seconds": "0.012", "replay_seconds": "0.004", "ticks_per_second": "3000",
     "insurance_fund_start": "0", "insurance_fund_end": "24", "insurance_fund_below_zero": false,
     "totals": {"margin_call": 2, "resolved": 1, "liquidation": 1, "skipped": 0,
                "fees": "24", "deficits_covered": "0"},
     "events": [{"moment": 1, "event_time": "2024-10-31T12:00:01.000Z",
                 "event_time_ms": 1730376001000, "kind": "margin_call",
                 "account_id": "alice", "pool": "cross", "margin_ratio": "0.95",
                 "margin_balance": "500", "maintenance_margin": "475"},
                {"kind": "liquidation", ..., "positions": [{"symbol": ..., "fee": ...}],
                 "realized_pnl": "-2800", "fee": "200", "deficit_covered": "0",
                 "insurance_fund_change": "200", "insurance_fund_after": "1200",
                 "cross_wallet_after": "0", "ended_episode": true}]}

Counts and event times in milliseconds are integers; money, ratios and rates decimal strings
(as the evaluation report writes them, ``base.report.decimal_string``); ``margin_ratio`` is
null when the margin balance is 0 or below. Moment 0 (the snapshot's marks) has no event time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from marginwatch.base.pools import CROSS_POOL, isolated_pool
from marginwatch.base.report import decimal_string
from marginwatch.base.stress_report import SECONDS_FORMAT, money
from marginwatch.engine.closeout import ClosedPosition, Closeout
from marginwatch.engine.replay import EventKind, ReplayEvent

_COLUMNS = (
    ("moment", ">6"),
    ("event time", "<24"),
    ("event", "<11"),
    ("account", "<16"),
    ("pool", "<24"),
    ("margin ratio", ">12"),
    ("fee", ">12"),
    ("deficit", ">14"),
    ("fund after", ">16"),
)


@dataclass(frozen=True)
class ReplayRun:
    """What was read and how long each part took."""

    snapshot: str
    ticks_file: str
    accounts: int
    pools: int
    positions: int
    ticks: int
    moments: int
    read_seconds: float
    replay_seconds: float
    fund_start: Decimal
    fund_end: Decimal

    @property
    def ticks_per_second(self) -> float:
        return self.ticks / self.replay_seconds if self.replay_seconds > 0 else 0.0


def pool_name(event: ReplayEvent) -> str:
    """``cross`` or ``isolated:SYMBOL:SIDE``."""
    return isolated_pool(event.positions[0]) if event.isolated else CROSS_POOL


def event_time_text(event_time_ms: int | None) -> str | None:
    """An event time as the logs write it (``2024-10-31T12:00:00.123Z``); ``None``: moment 0."""
    if event_time_ms is None:
        return None
    moment = datetime.fromtimestamp(event_time_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def totals(events: Sequence[ReplayEvent]) -> dict[str, Any]:
    """How many events of each kind, the fees charged and the deficits covered."""
    counts: dict[str, Any] = {kind.value: 0 for kind in EventKind}
    for event in events:
        counts[event.kind.value] += 1
    closeouts = [e.closeout for e in events if e.closeout is not None]
    counts["fees"] = money(sum((c.fee_charged for c in closeouts), Decimal(0)))
    counts["deficits_covered"] = money(sum((c.deficit_covered for c in closeouts), Decimal(0)))
    return counts


def replay_document(run: ReplayRun, events: Sequence[ReplayEvent]) -> dict[str, Any]:
    """The ``--json`` document (the module docstring's contract)."""
    return {
        "snapshot": run.snapshot,
        "ticks_file": run.ticks_file,
        "accounts": run.accounts,
        "pools": run.pools,
        "positions": run.positions,
        "ticks": run.ticks,
        "moments": run.moments,
        "read_seconds": format(run.read_seconds, SECONDS_FORMAT),
        "replay_seconds": format(run.replay_seconds, SECONDS_FORMAT),
        "ticks_per_second": format(run.ticks_per_second, ".0f"),
        "insurance_fund_start": money(run.fund_start),
        "insurance_fund_end": money(run.fund_end),
        "insurance_fund_below_zero": run.fund_end < 0,
        "totals": totals(events),
        "events": [event_document(event) for event in events],
    }


def event_document(event: ReplayEvent) -> dict[str, Any]:
    """One event of the timeline."""
    document: dict[str, Any] = {
        "moment": event.moment,
        "event_time": event_time_text(event.event_time_ms),
        "event_time_ms": event.event_time_ms,
        "kind": event.kind.value,
        "account_id": event.account_id,
        "pool": pool_name(event),
        "margin_ratio": decimal_string(event.pool.margin_ratio),
        "margin_balance": money(event.pool.margin_balance),
        "maintenance_margin": money(event.pool.maintenance_margin),
    }
    if event.closeout is not None and event.insurance_fund is not None:
        document |= closeout_document(event.closeout, event.insurance_fund)
        document["ended_episode"] = event.ended_episode
    return document


def closeout_document(closeout: Closeout, fund_after: Decimal) -> dict[str, Any]:
    """A liquidation's close-out, with the names of the live liquidation stream's fields."""
    return {
        "positions": [closed_document(closed) for closed in closeout.closed],
        "realized_pnl": money(closeout.realized_pnl),
        "fee": money(closeout.fee_charged),
        "deficit_covered": money(closeout.deficit_covered),
        "insurance_fund_change": money(closeout.insurance_fund_change),
        "insurance_fund_after": money(fund_after),
        "cross_wallet_after": money(closeout.account_after.cross_wallet_balance),
    }


def closed_document(closed: ClosedPosition) -> dict[str, Any]:
    """One position a liquidation closed."""
    position = closed.position
    return {
        "symbol": position.symbol,
        "position_side": position.position_side.value,
        "quantity": money(position.quantity),
        "entry_price": money(position.entry_price),
        "mark_price": money(closed.mark_price),
        "realized_pnl": money(closed.realized_pnl),
        "fee": money(closed.fee),
    }


def replay_table(run: ReplayRun, events: Sequence[ReplayEvent]) -> str:
    """The book and path, a line per event, the totals and the times."""
    lines = [header_line(run), "", _row([name for name, _ in _COLUMNS])]
    lines += [_row(event_cells(event)) for event in events]
    lines += ["", totals_line(run, events), times_line(run)]
    return "\n".join(lines) + "\n"


def header_line(run: ReplayRun) -> str:
    return (
        f"book: {run.accounts:,} accounts, {run.pools:,} pools, {run.positions:,} positions "
        f"({run.snapshot}); path: {run.ticks:,} ticks in {run.moments:,} moments "
        f"({run.ticks_file}); insurance fund {format(run.fund_start, ',')} USDT"
    )


def event_cells(event: ReplayEvent) -> list[str]:
    """One event's cells, in ``_COLUMNS`` order."""
    closeout = event.closeout
    fund = "" if event.insurance_fund is None else format(event.insurance_fund, ",.2f")
    return [
        str(event.moment),
        event_time_text(event.event_time_ms) or "(snapshot)",
        event.kind.value,
        event.account_id,
        pool_name(event),
        "-" if event.pool.margin_ratio is None else format(event.pool.margin_ratio, ".4f"),
        "" if closeout is None else format(closeout.fee_charged, ",.2f"),
        "" if closeout is None else format(closeout.deficit_covered, ",.2f"),
        fund,
    ]


def totals_line(run: ReplayRun, events: Sequence[ReplayEvent]) -> str:
    counted = totals(events)
    return (
        f"margin calls {counted['margin_call']:,}, resolutions {counted['resolved']:,}, "
        f"liquidations {counted['liquidation']:,} (skipped {counted['skipped']:,}); "
        f"fees {counted['fees']}, deficits covered {counted['deficits_covered']}; "
        f"insurance fund {money(run.fund_start)} -> {money(run.fund_end)} USDT"
        + (" (below zero: the deficits exceeded it)" if run.fund_end < 0 else "")
    )


def times_line(run: ReplayRun) -> str:
    return (
        f"read the snapshot and the path in {format(run.read_seconds, SECONDS_FORMAT)} s; "
        f"replayed {run.ticks:,} ticks ({run.moments:,} moments) in "
        f"{format(run.replay_seconds, SECONDS_FORMAT)} s ({run.ticks_per_second:,.0f} ticks/s)"
    )


def _row(cells: Sequence[str]) -> str:
    return "  ".join(format(cell, spec) for cell, (_, spec) in zip(cells, _COLUMNS, strict=True))

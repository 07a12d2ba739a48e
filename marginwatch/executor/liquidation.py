"""Liquidation, executed exactly once.

The action names a pool at an account version. Under ``WATCH`` on the account, its partition's
ledger of the insurance fund and the action's idempotency key (all on the partition's hash
slot), the executor re-evaluates the pool exactly against the latest account and the newest
marks:

* still ``liquidation``: the pool is closed out at mark (``engine.closeout``); the new account
  (version + 1), the partition's ledger, the audit record (on the partition's liquidation
  stream) and the idempotency key are written in one ``MULTI``;
* rescued (a deposit, a price move) or gone: nothing changes, and the skip is recorded with its
  reason, once per action (a skip key of its own: a skip never stands in the way of a later
  liquidation of the same pool at the same version).

A redelivered or duplicated task finds the idempotency key of its liquidation and does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.actions import Action
from marginwatch.base.pools import pool_of
from marginwatch.base.report import decimal_string
from marginwatch.base.settings import Settings
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.closeout import ClosedPosition, Closeout, close_out
from marginwatch.engine.exact import evaluate_account
from marginwatch.engine.types import Status
from marginwatch.executor.margin_calls import EVENTS_MAXLEN, now_ms
from marginwatch.state.accounts import StoredAccount, update_account_watching, write_account
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.due import queue_done
from marginwatch.state.episodes import end_vanished_episodes
from marginwatch.state.prices import read_ticks

DONE_TTL_SECONDS = 30 * 24 * 3600


def liquidation_key(action: Action) -> str:
    """Idempotency key of a liquidation action: account, pool and the version it was seen at."""
    return keys.idempotency(
        action.partition, f"liquidation:{action.account_id}:{action.pool}:{action.account_version}"
    )


def skip_key(action: Action) -> str:
    """Set when the action was skipped, so a redelivered skip is not recorded twice."""
    return keys.idempotency(
        action.partition, f"liquidation-skip:{action.account_id}:{action.pool}:"
        f"{action.account_version}:{action.tick_sequence}"
    )  # fmt: skip


@dataclass(frozen=True)
class LiquidationOutcome:
    """What a liquidation action did.

    ``result``: ``liquidated``, ``skipped`` or ``duplicate``; ``skip_reason``: ``rescued``,
    ``gone`` (the pool is no longer open) or ``unavailable`` (no account, or a mark missing);
    ``closed``: the positions closed.
    """

    result: str
    skip_reason: str | None = None
    closed: tuple[ClosedPosition, ...] = ()


def execute_liquidation(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    action: Action,
) -> str:
    """Liquidate the pool if the exact path still says so; returns what happened."""
    return liquidate(client, tables, settings, action).result


def liquidate(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    action: Action,
    bad: BadRecords | None = None,
) -> LiquidationOutcome:
    """Liquidate the pool if the exact path still says so; the outcome in full."""
    done, skipped = liquidation_key(action), skip_key(action)
    ledger = keys.insurance_fund(action.partition)
    marks: dict[str, Decimal] = {}

    def read_marks() -> None:  # before each attempt: a retry decides on the newest marks
        marks.clear()
        marks.update((symbol, t.mark_price) for symbol, t in read_ticks(client, bad).items())

    def mutate(
        current: StoredAccount | None, pipe: Pipeline, watched: dict[str, bytes | None]
    ) -> LiquidationOutcome:
        queue_done(pipe, action.partition, action.account_id, action.pool)
        if watched[done] is not None:
            return LiquidationOutcome("duplicate")
        ledger_text = watched[ledger]
        balance = Decimal(ledger_text.decode()) if ledger_text else Decimal(0)
        skip = _Skip(skipped, recorded=watched[skipped] is not None)
        outcome = _liquidate_or_skip(pipe, current, marks, balance, tables, settings, action, skip)
        if outcome.result == "liquidated":
            pipe.set(done, now_ms(), ex=DONE_TTL_SECONDS)
        return outcome

    return update_account_watching(
        client, action.account_id, settings.partitions, [done, skipped, ledger], mutate, read_marks
    )


@dataclass(frozen=True)
class _Skip:
    """The action's skip key, and whether a skip of it was recorded already."""

    key: str
    recorded: bool


def _liquidate_or_skip(
    pipe: Pipeline,
    current: StoredAccount | None,
    marks: dict[str, Decimal],
    ledger: Decimal,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    action: Action,
    skip: _Skip,
) -> LiquidationOutcome:
    if current is None or any(p.symbol not in marks for p in current.account.positions):
        return _skip(pipe, action, skip, "unavailable", "account or marks unavailable")
    report = evaluate_account(current.account, marks, tables, settings.thresholds, settings.venue)
    found = pool_of(report, action.pool)
    if found is None or not found[1]:
        return _skip(pipe, action, skip, "gone", "pool no longer open")
    pool, members = found
    if pool.status is not Status.LIQUIDATION:
        detail = f"rescued: margin ratio {decimal_string(pool.margin_ratio)}"
        return _skip(pipe, action, skip, "rescued", detail)
    positions = [member.position for member in members]
    closeout = close_out(current.account, positions, marks, settings.liquidation_fee_rate_for)
    write_account(pipe, closeout.account_after, settings.partitions)
    end_vanished_episodes(pipe, action.partition, current.account, closeout.account_after)
    pipe.set(keys.insurance_fund(action.partition), str(ledger + closeout.insurance_fund_change))
    _audit(pipe, action, current, decimal_string(pool.margin_ratio), closeout, ledger)
    return LiquidationOutcome("liquidated", closed=closeout.closed)


def _skip(
    pipe: Pipeline, action: Action, skip: _Skip, code: str, reason: str
) -> LiquidationOutcome:
    """Record the skip once per action (a redelivered one is a quiet ``duplicate``)."""
    if skip.recorded:
        return LiquidationOutcome("duplicate")
    pipe.set(skip.key, now_ms(), ex=DONE_TTL_SECONDS)
    pipe.xadd(
        keys.liquidations(action.partition),
        {"kind": "skipped", "account_id": action.account_id, "pool": action.pool,
         "version": action.account_version, "reason": reason, "executed_ms": now_ms(),
         "tick_sequence": action.tick_sequence,
         "tick_event_time_ms": action.tick_event_time_ms},
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )  # fmt: skip
    return LiquidationOutcome("skipped", skip_reason=code)


def _audit(
    pipe: Pipeline,
    action: Action,
    current: StoredAccount,
    margin_ratio: str | None,
    closeout: Closeout,
    ledger_before: Decimal,
) -> None:
    closed = [
        {"symbol": c.position.symbol, "position_side": c.position.position_side.value,
         "margin_mode": c.position.margin_mode.value, "quantity": str(c.position.quantity),
         "entry_price": str(c.position.entry_price), "mark_price": str(c.mark_price),
         "realized_pnl": str(c.realized_pnl), "fee": str(c.fee)}
        for c in closeout.closed
    ]  # fmt: skip
    pipe.xadd(
        keys.liquidations(action.partition),
        {
            "kind": "liquidation",
            "account_id": action.account_id,
            "pool": action.pool,
            "version_before": current.version,
            "positions": json.dumps(closed),
            "margin_ratio": margin_ratio or "",
            "realized_pnl": str(closeout.realized_pnl),
            "fee": str(closeout.fee_charged),
            "deficit_covered": str(closeout.deficit_covered),
            "insurance_fund_change": str(closeout.insurance_fund_change),
            "partition": action.partition,
            "insurance_ledger_after": str(ledger_before + closeout.insurance_fund_change),
            "cross_wallet_after": str(closeout.account_after.cross_wallet_balance),
            "tick_sequence": action.tick_sequence,
            "tick_event_time_ms": action.tick_event_time_ms,
            "executed_ms": now_ms(),
        },
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )

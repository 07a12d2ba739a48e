"""Liquidations, executed exactly once, in batches.

A batch is the liquidations one evaluation found (or any list of them). One pipelined round
reads each account (version and state), each action's idempotency and skip keys and each
partition's insurance-fund ledger; a second reads the marks of the symbols those accounts hold.
Each pool is re-evaluated exactly, for what the decision needs (its margin ratio at the newest
marks, ``exact.evaluate_pool``; no liquidation prices):

* still ``liquidation``: the pool is closed out at mark (``engine.closeout``);
* rescued (a deposit, a price move) or gone: nothing changes, and the skip is recorded with its
  reason, once per action (a skip key of its own: a skip never stands in the way of a later
  liquidation of the same pool at the same version).

What is decided for one account (its liquidations in batch order, each on the account the one
before left, and its skips) is one guarded write (``state.guarded``): the new account (version
+ 1), the partition's ledger, the audit records, the idempotency keys and the due set's
removals, run only if the account's version, those keys and the ledger are still what was read.
A write whose guard failed (a concurrent change, or an earlier account of the batch whose
ledger change did not happen) is decided again on a new read: a conflict costs a round, never a
lost or doubled change. A redelivered or duplicated action finds its idempotency key and does
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import redis
from redis.client import Pipeline

from marginwatch.base import keys
from marginwatch.base.actions import Action
from marginwatch.base.pools import in_pool
from marginwatch.base.report import decimal_string
from marginwatch.base.settings import Settings
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.closeout import ClosedPosition, Closeout, close_out
from marginwatch.engine.exact import PoolReport, evaluate_members
from marginwatch.engine.types import Account, Position, Status
from marginwatch.executor.margin_calls import EVENTS_MAXLEN, now_ms
from marginwatch.state.accounts import StoredAccount, record_account_write, stored_account
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.due import queue_done
from marginwatch.state.episodes import end_vanished_episodes
from marginwatch.state.guarded import Guard, GuardedWrite, Recorder
from marginwatch.state.prices import read_ticks_of

DONE_TTL_SECONDS = 30 * 24 * 3600
MAX_ROUNDS = 50  # reads and guarded writes of one batch before it gives up (the task retries)
AccountKey = tuple[int, str]  # (partition, account id)


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


DUPLICATE = LiquidationOutcome("duplicate")


def execute_liquidation(
    client: redis.Redis, tables: Mapping[str, BracketTable], settings: Settings, action: Action
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
    """A batch of one."""
    return liquidate_batch(client, tables, settings, [action], bad)[0]


def liquidate_batch(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    actions: Sequence[Action],
    bad: BadRecords | None = None,
) -> list[LiquidationOutcome]:
    """Liquidate each action's pool if the exact path still says so; the outcomes, in order."""
    outcomes: dict[int, LiquidationOutcome] = {}
    pending = list(range(len(actions)))
    for _round in range(MAX_ROUNDS):
        if not pending:
            break
        read = read_batch(client, [actions[i] for i in pending], bad)
        plans = plan_batch(pending, actions, read, tables, settings)
        pipe = client.pipeline(transaction=False)
        for plan in plans:
            plan.write.queue(pipe)
        pending = []
        for plan, written in zip(plans, pipe.execute(), strict=True):
            if written:
                outcomes.update(plan.outcomes)
            else:
                pending += sorted(plan.outcomes)
    if pending:
        raise redis.WatchError(f"{len(pending)} liquidations conflicted {MAX_ROUNDS} times")
    return [outcomes[i] for i in range(len(actions))]


@dataclass
class BatchRead:
    """What one round read: accounts (``None``: absent or corrupt) and their ``version``
    fields as stored, key values (``None``: absent) and the marks."""

    accounts: dict[AccountKey, StoredAccount | None]
    versions: dict[AccountKey, str | None]
    values: dict[str, str | None]
    marks: dict[str, Decimal]


def read_batch(client: redis.Redis, actions: Sequence[Action], bad: BadRecords | None) -> BatchRead:
    """The accounts, keys and ledgers the actions decide on (one round), then the marks of the
    accounts' symbols (one ``HMGET``)."""
    accounts = sorted({(a.partition, a.account_id) for a in actions})
    named = sorted({key for a in actions for key in (liquidation_key(a), skip_key(a))}
                   | {keys.insurance_fund(a.partition) for a in actions})  # fmt: skip
    pipe = client.pipeline(transaction=False)
    for partition, account_id in accounts:
        pipe.hmget(keys.account(partition, account_id), ["version", "state"])
    for key in named:
        pipe.get(key)
    replies = pipe.execute()
    fields = dict(zip(accounts, replies, strict=False))
    stored = {(p, a): stored_account(a, v, s, None) for (p, a), (v, s) in fields.items()}
    versions = {key: None if v is None else v.decode() for key, (v, _s) in fields.items()}
    values = {
        k: None if v is None else v.decode()
        for k, v in zip(named, replies[len(accounts) :], strict=True)
    }
    symbols = {p.symbol for s in stored.values() if s is not None for p in s.account.positions}
    marks = {s: tick.mark_price for s, tick in read_ticks_of(client, symbols, bad).items()}
    return BatchRead(stored, versions, values, marks)


@dataclass
class AccountPlan:
    """One account's guarded write and the outcomes it carries (by action index)."""

    write: GuardedWrite
    outcomes: dict[int, LiquidationOutcome] = field(default_factory=dict)


def plan_batch(
    pending: Sequence[int],
    actions: Sequence[Action],
    read: BatchRead,
    tables: Mapping[str, BracketTable],
    settings: Settings,
) -> list[AccountPlan]:
    """Decide every pending action, account by account; each liquidating account's write
    expects the ledger the previous one of its partition leaves."""
    groups: dict[AccountKey, list[int]] = {}
    for index in pending:
        groups.setdefault((actions[index].partition, actions[index].account_id), []).append(index)
    ledgers = {p: read.values[keys.insurance_fund(p)] for p, _account in groups}
    return [
        AccountPlanner(key, read, tables, settings, ledgers).plan(indices, actions)
        for key, indices in groups.items()
    ]


@dataclass
class AccountPlanner:
    """Decides one account's actions, recording their writes."""

    key: AccountKey
    read: BatchRead
    tables: Mapping[str, BracketTable]
    settings: Settings
    ledgers: dict[int, str | None]  # per partition: the ledger the next write expects
    recorder: Recorder = field(default_factory=Recorder)
    guards: list[Guard] = field(default_factory=list)
    decided: set[str] = field(default_factory=set)  # idempotency and skip keys used
    account: Account | None = None  # as the actions decided so far leave it
    balance: Decimal = Decimal(0)  # the partition's ledger as they leave it

    def plan(self, indices: Sequence[int], actions: Sequence[Action]) -> AccountPlan:
        partition, account_id = self.key
        stored = self.read.accounts[self.key]
        version = self.read.versions[self.key]
        self.guards.append(Guard(keys.account(partition, account_id), version, "version"))
        ledger_text = self.ledgers[partition]
        self.balance = Decimal(ledger_text) if ledger_text else Decimal(0)
        self.account = None if stored is None else stored.account
        outcomes = {index: self.decide(actions[index], stored) for index in indices}
        if stored is not None and self.account is not stored.account:
            self.write_account(stored, ledger_text)
        return AccountPlan(GuardedWrite(self.guards, self.recorder), outcomes)

    def decide(self, action: Action, stored: StoredAccount | None) -> LiquidationOutcome:
        done, skipped = liquidation_key(action), skip_key(action)
        self.guards += [
            Guard(done, self.read.values[done]),
            Guard(skipped, self.read.values[skipped]),
        ]
        queue_done(self.recorder.pipe, action.partition, action.account_id, action.pool)
        if self.read.values[done] is not None or done in self.decided:
            return DUPLICATE
        self.decided.add(done)
        verdict = pool_verdict(
            self.account, action.pool, self.read.marks, self.tables, self.settings
        )
        if isinstance(verdict, Skip):
            return self.skip(action, skipped, verdict)
        assert stored is not None  # a pool to liquidate exists
        assert self.account is not None
        return self.liquidate(action, stored, verdict)

    def skip(self, action: Action, skipped: str, verdict: Skip) -> LiquidationOutcome:
        """Record the skip once per action (a redelivered one is a quiet ``duplicate``)."""
        if self.read.values[skipped] is not None or skipped in self.decided:
            return DUPLICATE
        self.decided.add(skipped)
        self.recorder.pipe.set(skipped, now_ms(), ex=DONE_TTL_SECONDS)
        record_skip(self.recorder.pipe, action, verdict.detail)
        return LiquidationOutcome("skipped", skip_reason=verdict.code)

    def liquidate(
        self, action: Action, stored: StoredAccount, verdict: Liquidate
    ) -> LiquidationOutcome:
        assert self.account is not None
        closeout = close_out(self.account, verdict.members, self.read.marks,
                             self.settings.liquidation_fee_rate_for)  # fmt: skip
        self.balance += closeout.insurance_fund_change
        record_audit(self.recorder.pipe, action, stored, decimal_string(verdict.pool.margin_ratio),
                     closeout, self.balance)  # fmt: skip
        self.recorder.pipe.set(liquidation_key(action), now_ms(), ex=DONE_TTL_SECONDS)
        self.account = closeout.account_after
        return LiquidationOutcome("liquidated", closed=closeout.closed)

    def write_account(self, stored: StoredAccount, ledger_text: str | None) -> None:
        """The account after its liquidations, the partition's ledger, the ended episodes."""
        partition = self.key[0]
        assert self.account is not None
        ledger = keys.insurance_fund(partition)
        self.guards.append(Guard(ledger, ledger_text))
        self.recorder.pipe.set(ledger, str(self.balance))
        self.ledgers[partition] = str(self.balance)
        record_account_write(
            self.recorder.pipe, self.account, stored.version + 1, self.settings.partitions
        )
        end_vanished_episodes(self.recorder.pipe, partition, stored.account, self.account)


@dataclass(frozen=True)
class Skip:
    """Why a pool is not liquidated: ``code`` (``LiquidationOutcome.skip_reason``), detail."""

    code: str
    detail: str


@dataclass(frozen=True)
class Liquidate:
    """A pool to liquidate: its exact figures and its positions."""

    pool: PoolReport
    members: list[Position]


def pool_verdict(
    account: Account | None,
    pool_name: str,
    marks: Mapping[str, Decimal],
    tables: Mapping[str, BracketTable],
    settings: Settings,
) -> Skip | Liquidate:
    """Whether the named pool of ``account`` is still at ``liquidation`` at ``marks``."""
    if account is None or any(p.symbol not in marks for p in account.positions):
        return Skip("unavailable", "account or marks unavailable")
    members = [p for p in account.positions if in_pool(p, pool_name)]
    if not members:
        return Skip("gone", "pool no longer open")
    pool = evaluate_members(account, members, marks, tables, settings.thresholds)
    if pool.status is not Status.LIQUIDATION:
        return Skip("rescued", f"rescued: margin ratio {decimal_string(pool.margin_ratio)}")
    return Liquidate(pool, members)


def record_skip(recorder: Pipeline, action: Action, reason: str) -> None:
    recorder.xadd(
        keys.liquidations(action.partition),
        {"kind": "skipped", "account_id": action.account_id, "pool": action.pool,
         "version": action.account_version, "reason": reason, "executed_ms": now_ms(),
         "tick_sequence": action.tick_sequence,
         "tick_event_time_ms": action.tick_event_time_ms},
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )  # fmt: skip


def record_audit(
    recorder: Pipeline,
    action: Action,
    stored: StoredAccount,
    margin_ratio: str | None,
    closeout: Closeout,
    ledger_after: Decimal,
) -> None:
    closed = [
        {"symbol": c.position.symbol, "position_side": c.position.position_side.value,
         "margin_mode": c.position.margin_mode.value, "quantity": str(c.position.quantity),
         "entry_price": str(c.position.entry_price), "mark_price": str(c.mark_price),
         "realized_pnl": str(c.realized_pnl), "fee": str(c.fee)}
        for c in closeout.closed
    ]  # fmt: skip
    recorder.xadd(
        keys.liquidations(action.partition),
        {
            "kind": "liquidation",
            "account_id": action.account_id,
            "pool": action.pool,
            "version_before": stored.version,
            "positions": json.dumps(closed),
            "margin_ratio": margin_ratio or "",
            "realized_pnl": str(closeout.realized_pnl),
            "fee": str(closeout.fee_charged),
            "deficit_covered": str(closeout.deficit_covered),
            "insurance_fund_change": str(closeout.insurance_fund_change),
            "partition": action.partition,
            "insurance_ledger_after": str(ledger_after),
            "cross_wallet_after": str(closeout.account_after.cross_wallet_balance),
            "tick_sequence": action.tick_sequence,
            "tick_event_time_ms": action.tick_event_time_ms,
            "executed_ms": now_ms(),
        },
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )

"""The executor's actions, as plain functions: margin calls, their resolution, liquidations.

Each action re-reads the account and the newest marks and re-checks with the exact path; what
it finds decides. Each is idempotent: a redelivered or duplicated task changes nothing twice.

* Margin call: once per episode (``keys.episode`` set with NX), a Binance-shaped
  ``MARGIN_CALL`` event on the partition's ``keys.margin_call_events``, both in one script.
* Resolution: the episode ends (key deleted) when the ratio is below the re-arm level; a
  ``resolved`` event, in the same script.
* Liquidation: see ``liquidation.py``.

The episode key, its event and the event's webhook deliveries (one outbox entry per URL,
``keys.webhook_outbox``; see ``outbox.py``) change together or not at all, in one script (a
crash between them would lose the event or its webhooks, or record one twice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import redis

from marginwatch.base import keys
from marginwatch.base.actions import Action
from marginwatch.base.pools import CROSS_POOL, pool_member, pool_of
from marginwatch.base.report import decimal_string
from marginwatch.base.settings import Settings
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.exact import AccountReport, PoolReport, PositionReport, evaluate_account
from marginwatch.state.accounts import StoredAccount, read_accounts
from marginwatch.state.bad_records import BadRecords
from marginwatch.state.connection import queue_script
from marginwatch.state.prices import read_ticks_of

EVENTS_MAXLEN = 1_000_000
EPISODE_TTL_SECONDS = 30 * 24 * 3600


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def evaluate_stored(
    client: redis.Redis,
    stored: StoredAccount,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    bad: BadRecords | None = None,
) -> AccountReport | None:
    """The account's exact report at the newest marks (``None`` if a mark is missing)."""
    symbols = [position.symbol for position in stored.account.positions]
    ticks = read_ticks_of(client, symbols, bad)
    marks = {symbol: tick.mark_price for symbol, tick in ticks.items()}
    if any(position.symbol not in marks for position in stored.account.positions):
        return None
    return evaluate_account(stored.account, marks, tables, settings.thresholds, settings.venue)


def margin_call_event(
    report: AccountReport, pool: str, members: list[PositionReport], event_time_ms: int
) -> dict[str, Any]:
    """Binance's ``MARGIN_CALL`` shape (reference §4.1); ``cw`` only for the cross pool."""
    event: dict[str, Any] = {"e": "MARGIN_CALL", "E": event_time_ms}
    if pool == CROSS_POOL:
        event["cw"] = decimal_string(report.account.cross_wallet_balance)
    event["p"] = [_margin_call_position(member) for member in members]
    return event


def _margin_call_position(member: PositionReport) -> dict[str, Any]:
    position = member.position
    return {
        "s": position.symbol,
        "ps": position.position_side.value,
        "pa": decimal_string(position.quantity),
        "mt": "ISOLATED" if position.is_isolated else "CROSSED",
        "iw": decimal_string(position.isolated_wallet or Decimal(0)),
        "mp": decimal_string(member.mark_price),
        "up": decimal_string(member.unrealized_pnl),
        "mm": decimal_string(member.maintenance_margin),
    }


def execute_margin_calls(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    batch: list[Action],
    bad: BadRecords | None = None,
) -> list[str]:
    """Emit a MARGIN_CALL once per episode for every action of ``batch`` whose exact ratio
    still calls for it, in three round trips whatever its size: the accounts (pipelined), their
    marks (one HMGET), and the episode scripts (pipelined), each of which also appends the
    event's webhook deliveries to the outbox. Returns each action's outcome (``sent``,
    ``duplicate``, ``not_confirmed`` or ``gone``), in order."""
    accounts = _read_accounts_of(client, batch, bad)
    symbols = {p.symbol for stored in accounts.values() for p in stored.account.positions}
    marks = {s: tick.mark_price for s, tick in read_ticks_of(client, symbols, bad).items()}
    found = [_pool_at(accounts.get((a.partition, a.account_id)), a.pool, marks, tables, settings)
             for a in batch]  # fmt: skip
    results = ["gone" if f is None else "not_confirmed" for f in found]
    confirmed = {i: f for i, f in enumerate(found) if f is not None and _calls(f[1], settings)}
    fields = {
        i: _fields("margin_call", batch[i], pool, margin_call_event(report, batch[i].pool,
                                                                    members, now_ms()))
        for i, (report, pool, members) in confirmed.items()
    }  # fmt: skip
    pipe = client.pipeline(transaction=False)
    for i in confirmed:
        action = batch[i]
        read_at = accounts[(action.partition, action.account_id)].version
        account = keys.account(action.partition, action.account_id)
        queue_script(pipe, _START_EPISODE, [*_episode_keys(action), account],
                     action.tick_sequence, EPISODE_TTL_SECONDS, EVENTS_MAXLEN,
                     pool_member(action.account_id, action.pool), read_at, *_urls(settings),
                     *_flat(fields[i]))  # fmt: skip
    for i, entry_id in zip(confirmed, pipe.execute(), strict=True):
        results[i] = _started(entry_id)
    return results


def _started(entry_id: bytes | int) -> str:
    """The outcome of an episode script: sent, duplicate (an episode is open already), or
    not_confirmed (the account changed since it was read)."""
    if entry_id == -1:
        return "not_confirmed"
    return "duplicate" if not entry_id or isinstance(entry_id, int) else "sent"


def _read_accounts_of(
    client: redis.Redis, batch: list[Action], bad: BadRecords | None
) -> dict[tuple[int, str], StoredAccount]:
    """The batch's accounts by (partition, id), read partition by partition."""
    found: dict[tuple[int, str], StoredAccount] = {}
    for partition in sorted({action.partition for action in batch}):
        ids = sorted({a.account_id for a in batch if a.partition == partition})
        read = read_accounts(client, partition, ids, bad)
        found.update(((partition, i), stored) for i, stored in read.items())
    return found


def _calls(pool: PoolReport, settings: Settings) -> bool:
    """Whether the pool's exact ratio still calls for a margin call."""
    return settings.episode_rules.calls(pool.margin_ratio)


def _pool_at(
    stored: StoredAccount | None,
    pool: str,
    marks: Mapping[str, Decimal],
    tables: Mapping[str, BracketTable],
    settings: Settings,
) -> tuple[AccountReport, PoolReport, list[PositionReport]] | None:
    """The pool's exact figures at ``marks``; ``None`` if the account, a mark or the pool is
    missing (a pool without a position, e.g. liquidated meanwhile, is missing)."""
    if stored is None or any(p.symbol not in marks for p in stored.account.positions):
        return None
    report = evaluate_account(stored.account, marks, tables, settings.thresholds, settings.venue,
                              with_prices=False)  # fmt: skip
    found = pool_of(report, pool)
    return None if found is None or not found[1] else (report, found[0], found[1])


def execute_resolution(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    action: Action,
    bad: BadRecords | None = None,
) -> str:
    """End the episode (and say so, with its webhook deliveries in the outbox) if the exact
    ratio is below the re-arm level; the outcome."""
    found = _current_pool(client, tables, settings, action, bad)
    if found is not None:
        _report, pool, _members = found
        if not settings.episode_rules.resolves(pool.margin_ratio):
            return "not_confirmed"
    event = {"e": "MARGIN_CALL_RESOLVED", "E": now_ms()}
    fields = _fields("resolved", action, None if found is None else found[1], event)
    entry_id = client.eval(_END_EPISODE, 4, *_episode_keys(action), EVENTS_MAXLEN,
                           pool_member(action.account_id, action.pool), *_urls(settings),
                           *_flat(fields))  # fmt: skip
    return "sent" if entry_id else "duplicate"


def _current_pool(
    client: redis.Redis,
    tables: Mapping[str, BracketTable],
    settings: Settings,
    action: Action,
    bad: BadRecords | None,
) -> tuple[AccountReport, PoolReport, list[PositionReport]] | None:
    read = read_accounts(client, action.partition, [action.account_id], bad)
    stored = read.get(action.account_id)
    report = None if stored is None else evaluate_stored(client, stored, tables, settings, bad)
    found = None if report is None else pool_of(report, action.pool)
    if report is None or found is None:
        return None
    return report, found[0], found[1]


def _episode_keys(action: Action) -> tuple[str, str, str, str]:
    """The episode key, the partition's margin-call stream, its set of open episodes and its
    webhook outbox."""
    partition = action.partition
    return (keys.episode(partition, action.account_id, action.pool),
            keys.margin_call_events(partition), keys.partition_episodes(partition),
            keys.webhook_outbox(partition))  # fmt: skip


def _urls(settings: Settings) -> list[str | int]:
    """The script arguments naming the webhook URLs: their count, then each."""
    return [len(settings.webhook_urls), *settings.webhook_urls]


# Appends one outbox entry per webhook URL (ARGV[first] .. ARGV[first + count - 1]) for the
# event written as ``id`` with ``fields``: the event and its deliveries are recorded together.
_OUTBOX = """
local function outbox(key, maxlen, first, count, id, fields)
  for i = first, first + count - 1 do
    redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'url', ARGV[i], 'event_entry', id,
               unpack(fields))
  end
end
"""
# KEYS: episode key, event stream, the partition's open episodes, webhook outbox (start: and
# the account). ARGV (start): tick sequence, TTL seconds, stream max length, member, account
# version read, URL count n, n URLs, field, value, ... Each returns the event's stream entry
# id, or 0 when it wrote nothing; start returns -1 when the account changed since it was read
# (a liquidation or a fill may have closed the pool and ended its episode: it must not open
# again).
_START_EPISODE = (
    _OUTBOX
    + """
if redis.call('HGET', KEYS[5], 'version') ~= ARGV[5] then return -1 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('SADD', KEYS[3], ARGV[4])
local fields = {unpack(ARGV, 7 + tonumber(ARGV[6]))}
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
outbox(KEYS[4], ARGV[3], 7, tonumber(ARGV[6]), id, fields)
return id
"""
)
# ARGV (end): stream max length, member, URL count n, n URLs, field, value, ... (the member
# leaves the set even when the key is gone already: expired, or ended by a liquidation)
_END_EPISODE = (
    _OUTBOX
    + """
redis.call('SREM', KEYS[3], ARGV[2])
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
local fields = {unpack(ARGV, 4 + tonumber(ARGV[3]))}
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
outbox(KEYS[4], ARGV[1], 4, tonumber(ARGV[3]), id, fields)
return id
"""
)


def _fields(
    kind: str, action: Action, pool: PoolReport | None, event: dict[str, Any]
) -> dict[str, str | int]:
    """The stream entry of a margin-call event: the action, the ratio, the Binance event."""
    ratio = None if pool is None else decimal_string(pool.margin_ratio)
    return {
        "kind": kind,
        "account_id": action.account_id,
        "pool": action.pool,
        "margin_ratio": ratio or "",
        "event": json.dumps(event),
        "tick_sequence": action.tick_sequence,
        "tick_event_time_ms": action.tick_event_time_ms,
        "emitted_ms": event["E"],
    }


def _flat(fields: dict[str, str | int]) -> list[str | int]:
    return [item for pair in fields.items() for item in pair]

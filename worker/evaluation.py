"""One evaluation of a partition: newest marks, batch screening, exact confirmation, actions.

The batch path screens every pool of the partition; only the pools where an action may be due
are evaluated again with the exact path, and an action is sent only when the exact status says
so: a margin call when a pool enters an episode (ratio >= margin call ratio), its resolution when
the ratio falls below ``margin_call_ratio - margin_call_hysteresis``, a liquidation when the pool
reaches ``liquidation`` (once per account version).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from redis.client import Pipeline

from marginwatch import keys
from marginwatch.contract import Tick, ticks_from_prices_hash
from marginwatch.engine import batch
from marginwatch.engine.exact import PoolReport, evaluate_account
from marginwatch.engine.types import Account, Status
from marginwatch.settings import Settings
from worker.celery_app import TASK_LIQUIDATE, TASK_MARGIN_CALL, TASK_MARGIN_CALL_RESOLVED
from worker.partition import CROSS_POOL, PartitionBook, isolated_pool

MARGIN_CALL_CODE = Status.MARGIN_CALL.severity
LIQUIDATION_CODE = Status.LIQUIDATION.severity
RISKIEST_KEPT = 20
RISKIEST_INTERVAL_SECONDS = 1.0
NO_RATIO_SCORE = 1e9  # margin balance <= 0: riskier than any ratio

SendAction = Callable[[str, dict[str, Any]], None]


@dataclass
class EvaluationOutcome:
    """What one evaluation saw and did; ``started_at`` is wall-clock Unix seconds, ``ticks``
    and ``marks`` the prices it read (for metrics)."""

    positions: int = 0
    pools: int = 0
    accounts_refreshed: int = 0
    candidates: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    newest_tick: Tick | None = None
    seconds: float = 0.0
    started_at: float = 0.0
    ticks: dict[str, Tick] = field(default_factory=dict, repr=False)
    marks: batch.FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)


def read_ticks(client: redis.Redis) -> dict[str, Tick]:
    """The newest tick of every symbol."""
    fields: Mapping[bytes, bytes] = client.hgetall(keys.PRICES)  # type: ignore[assignment]
    return ticks_from_prices_hash(fields)


def read_ticks_of(client: redis.Redis, symbols: Iterable[str]) -> dict[str, Tick]:
    """The newest tick of each of ``symbols`` that has one (one HMGET, only these parsed)."""
    wanted = sorted(set(symbols))
    if not wanted:
        return {}
    values: list[bytes | None] = client.hmget(keys.PRICES, wanted)  # type: ignore[assignment]
    return {s: Tick.from_json(v) for s, v in zip(wanted, values, strict=True) if v is not None}


def evaluate_partition(
    book: PartitionBook, client: redis.Redis, settings: Settings, send: SendAction
) -> EvaluationOutcome:
    """Refresh the partition, screen it, confirm candidates, send the due actions."""
    started, started_at = time.perf_counter(), time.time()
    ticks = book.ticks.read(client)
    refreshed = book.refresh(client)
    marks = book.brackets.marks_array({s: tick.mark_price for s, tick in ticks.items()})
    outcome = EvaluationOutcome(
        accounts_refreshed=refreshed, started_at=started_at, ticks=ticks, marks=marks
    )
    batch.evaluate_ratios(book.book, book.brackets, marks, settings.thresholds, book.result)
    candidates = select_candidates(book, settings)
    settle_quiet_pools(book, candidates)
    for pool in np.flatnonzero(candidates):
        confirm_pool(book, int(pool), ticks, settings, send, outcome)
    outcome.newest_tick = max(ticks.values(), key=lambda tick: tick.sequence, default=None)
    write_progress(client, book, outcome.newest_tick)
    outcome.positions, outcome.pools = book.book.positions, book.book.pools
    outcome.candidates = int(candidates.sum())
    outcome.seconds = time.perf_counter() - started
    return outcome


def select_candidates(book: PartitionBook, settings: Settings) -> npt.NDArray[np.bool_]:
    """Pools where an action may be due: to be confirmed with the exact path."""
    status, ratio = book.result.status, book.result.margin_ratio
    rearm_below = float(settings.margin_call_ratio - settings.margin_call_hysteresis)
    entering = (status >= MARGIN_CALL_CODE) & (book.confirmed_status != status)
    recovering = book.in_episode & (ratio < rearm_below)
    return entering | recovering | book.result.uncertain  # type: ignore[no-any-return]


def settle_quiet_pools(book: PartitionBook, candidates: npt.NDArray[np.bool_]) -> None:
    """Pools below margin call need no action: their batch status is their status."""
    quiet = ~candidates & (book.result.status < MARGIN_CALL_CODE)
    book.confirmed_status[quiet] = book.result.status[quiet]


def confirm_pool(
    book: PartitionBook,
    pool: int,
    ticks: Mapping[str, Tick],
    settings: Settings,
    send: SendAction,
    outcome: EvaluationOutcome,
) -> None:
    """Evaluate the pool exactly and send what its exact status calls for."""
    stored = book.account_of_pool(pool)
    pool_name = book.pool_key(pool)[1]
    if any(position.symbol not in ticks for position in stored.account.positions):
        return
    marks = {symbol: tick.mark_price for symbol, tick in ticks.items()}
    exact = exact_pool(stored.account, pool_name, marks, book, settings)
    if exact is None:
        return
    payload = action_payload(stored.account, stored.version, pool_name, exact, ticks)
    for task in due_actions(book, pool, exact, settings):
        send(task, payload)
        outcome.sent[task] = outcome.sent.get(task, 0) + 1
    book.confirmed_status[pool] = exact.status.severity


def due_actions(book: PartitionBook, pool: int, exact: PoolReport, settings: Settings) -> list[str]:
    """Actions due for a pool given its exact figures; updates its episode flag."""
    tasks = []
    if exact.status is Status.LIQUIDATION and book.confirmed_status[pool] != LIQUIDATION_CODE:
        tasks.append(TASK_LIQUIDATE)
    rearm_below = settings.margin_call_ratio - settings.margin_call_hysteresis
    if not book.in_episode[pool] and exact.status.severity >= MARGIN_CALL_CODE:
        tasks.insert(0, TASK_MARGIN_CALL)
        book.in_episode[pool] = True
    elif (
        book.in_episode[pool]
        and exact.margin_ratio is not None
        and (exact.margin_ratio < rearm_below)
    ):
        tasks.append(TASK_MARGIN_CALL_RESOLVED)
        book.in_episode[pool] = False
    return tasks


def exact_pool(
    account: Account,
    pool_name: str,
    marks: Mapping[str, Decimal],
    book: PartitionBook,
    settings: Settings,
) -> PoolReport | None:
    """The exact figures of one pool of an account."""
    report = evaluate_account(account, marks, book.tables, settings.thresholds, settings.venue)
    if pool_name == CROSS_POOL:
        return report.cross
    for position in report.positions:
        if position.position.is_isolated and isolated_pool(position.position) == pool_name:
            return position.pool
    return None


def pool_symbols(account: Account, pool_name: str) -> list[str]:
    """Symbols whose marks move the pool."""
    if pool_name == CROSS_POOL:
        return [p.symbol for p in account.positions if not p.is_isolated]
    return [p.symbol for p in account.positions if p.is_isolated and isolated_pool(p) == pool_name]


def action_payload(
    account: Account,
    version: int,
    pool_name: str,
    exact: PoolReport,
    ticks: Mapping[str, Tick],
) -> dict[str, Any]:
    """The JSON payload of an action: which pool, at which version, triggered by which tick."""
    symbols = pool_symbols(account, pool_name)
    trigger = max((ticks[s] for s in symbols), key=lambda tick: tick.sequence, default=None)
    return {
        "account_id": account.account_id,
        "pool": pool_name,
        "version": version,
        "detected_ratio": None if exact.margin_ratio is None else str(exact.margin_ratio),
        "tick_sequence": trigger.sequence if trigger else 0,
        "tick_event_time_ms": trigger.event_time_ms if trigger else 0,
    }


def write_progress(client: redis.Redis, book: PartitionBook, newest_tick: Tick | None) -> None:
    """The newest tick sequence this evaluation read and, at most once per
    ``RISKIEST_INTERVAL_SECONDS``, the partition's riskiest pools (for ``status`` and the demo
    view), in one transaction (actions are already sent)."""
    pipe = client.pipeline(transaction=True)
    now = time.monotonic()
    if now - book.riskiest_written_at >= RISKIEST_INTERVAL_SECONDS:
        book.riskiest_written_at = now
        write_riskiest(pipe, book)
    pipe.set(keys.partition_evaluated(book.partition), newest_tick.sequence if newest_tick else 0)
    pipe.execute()


def write_riskiest(pipe: Pipeline, book: PartitionBook) -> None:
    """Queue the replacement of the partition's riskiest pools on ``pipe``."""
    ratio = np.where(
        book.result.status == LIQUIDATION_CODE, NO_RATIO_SCORE, book.result.margin_ratio
    )
    ratio = np.nan_to_num(ratio, nan=-1.0)
    count = min(RISKIEST_KEPT, ratio.shape[0])
    if count == 0:
        return
    top = np.argpartition(-ratio, count - 1)[:count]
    members = {"|".join(book.pool_key(int(i))): float(ratio[i]) for i in top}
    pipe.delete(keys.partition_status(book.partition))
    pipe.zadd(keys.partition_status(book.partition), members)

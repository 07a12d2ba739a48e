"""What is due for the candidate pools of an evaluation: decided by the float screen where it
is certain, by the exact path where it is not.

A candidate the screen is certain about (``batch``'s error bound: its gap to every threshold
and to the re-arm level is wider than the rounding error) has its exact status, so its actions
are decided from the screened figures and the book's version of its account. A candidate the
screen flags *uncertain* is confirmed exactly, on its account as Redis holds it now (all such
accounts read in one pipelined round). Either way, the executor confirms every action exactly
against the newest state before it acts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import redis

from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.pools import pool_of
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.engine import batch
from marginwatch.engine.episodes import LIQUIDATION_CODE, due_for
from marginwatch.engine.exact import evaluate_account
from marginwatch.engine.types import STATUS_ORDER, Status
from marginwatch.state.accounts import StoredAccount, read_accounts
from marginwatch.worker.partition import PartitionBook


@dataclass(frozen=True, slots=True)
class Decision:
    """What was decided for a pool: its status code and whether it is in a margin-call
    episode; applied once the pool's actions are sent."""

    pool: int
    status_code: int
    in_episode: bool


@dataclass(frozen=True, slots=True)
class Figures:
    """A pool's status and margin ratio (``None``: margin balance <= 0), the account version
    they are for and the tick that moved the pool last."""

    status: Status
    margin_ratio: Decimal | None
    version: int
    trigger: Tick | None


def decide_candidates(
    book: PartitionBook,
    client: redis.Redis,
    candidates: batch.IntArray,
    ticks: Mapping[str, Tick],
    settings: Settings,
) -> tuple[list[Action], list[Decision]]:
    """The actions due for ``candidates``, in pool order, and the decisions to remember."""
    uncertain = candidates[book.result.uncertain[candidates]]
    confirmed = exact_figures(book, client, uncertain, ticks, settings)
    actions: list[Action] = []
    decisions: list[Decision] = []
    for pool in (int(p) for p in candidates):
        figures = confirmed[pool] if pool in confirmed else screened_figures(book, pool, ticks)
        if figures is not None:
            due, in_episode = due_actions(book, pool, figures, settings)
            actions += [action_for(book, pool, kind, figures) for kind in due]
            decisions.append(Decision(pool, figures.status.severity, in_episode))
    return actions, decisions


def screened_figures(book: PartitionBook, pool: int, ticks: Mapping[str, Tick]) -> Figures:
    """The float screen's figures of a pool it is certain about."""
    ratio = float(book.result.margin_ratio[pool])
    number = int(book.pool_codes[pool]) // book.code_stride
    return Figures(
        STATUS_ORDER[int(book.result.status[pool])],
        None if math.isnan(ratio) else Decimal(repr(ratio)),
        int(book.versions[number]),
        newest_tick(pool_symbols_of(book, pool), ticks),
    )


def pool_symbols_of(book: PartitionBook, pool: int) -> list[str]:
    """The symbols of the pool's rows."""
    rows = book.book.symbol[book.book.pool_starts[pool] : book.book.pool_starts[pool + 1]]
    return [book.brackets.symbols[int(s)] for s in np.unique(rows)]


def exact_figures(
    book: PartitionBook,
    client: redis.Redis,
    pools: batch.IntArray,
    ticks: Mapping[str, Tick],
    settings: Settings,
) -> dict[int, Figures | None]:
    """Exact figures of ``pools`` on their accounts as Redis holds them (``None``: not to be
    decided now: the account or a mark is missing, or the pool is gone)."""
    names = {int(pool): book.pool_key(int(pool)) for pool in pools}
    stored = read_accounts(client, book.partition, sorted({a for a, _ in names.values()}), book.bad)
    return {
        pool: exact_pool(book, stored.get(account_id), pool_name, ticks, settings)
        for pool, (account_id, pool_name) in names.items()
    }


def exact_pool(
    book: PartitionBook,
    stored: StoredAccount | None,
    pool_name: str,
    ticks: Mapping[str, Tick],
    settings: Settings,
) -> Figures | None:
    """The exact figures of one pool of an account."""
    if stored is None or any(p.symbol not in ticks for p in stored.account.positions):
        return None
    marks = {symbol: tick.mark_price for symbol, tick in ticks.items()}
    report = evaluate_account(stored.account, marks, book.tables, settings.thresholds,
                              settings.venue)  # fmt: skip
    found = pool_of(report, pool_name)
    if found is None:
        return None
    pool, members = found
    trigger = newest_tick([member.position.symbol for member in members], ticks)
    return Figures(pool.status, pool.margin_ratio, stored.version, trigger)


def newest_tick(symbols: list[str], ticks: Mapping[str, Tick]) -> Tick | None:
    """The newest tick among ``symbols``."""
    held = [ticks[s] for s in symbols if s in ticks]
    return max(held, key=lambda tick: tick.sequence, default=None)


def due_actions(
    book: PartitionBook, pool: int, figures: Figures, settings: Settings
) -> tuple[list[ActionKind], bool]:
    """Actions due for a pool given its figures (``engine.episodes.due_for``), in the order
    they are sent, and whether it is in an episode after them (the book is not changed
    here)."""
    due = due_for(figures.status, figures.margin_ratio, bool(book.in_episode[pool]),
                  book.confirmed_status[pool] == LIQUIDATION_CODE,
                  settings.episode_rules)  # fmt: skip
    kinds = [ActionKind.MARGIN_CALL] if due.margin_call else []
    kinds += [ActionKind.LIQUIDATION] if due.liquidation else []
    kinds += [ActionKind.MARGIN_CALL_RESOLVED] if due.resolution else []
    return kinds, due.in_episode


def action_for(book: PartitionBook, pool: int, kind: ActionKind, figures: Figures) -> Action:
    """The action of ``kind`` for a pool, naming its version and the tick that moved it."""
    account_id, pool_name = book.pool_key(pool)
    trigger = figures.trigger
    ratio = None if figures.margin_ratio is None else str(figures.margin_ratio)
    return Action(kind, book.partition, account_id, pool_name, figures.version,
                  trigger.sequence if trigger else 0, trigger.event_time_ms if trigger else 0,
                  ratio)  # fmt: skip

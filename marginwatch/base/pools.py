"""Pool names: how an action, a stream entry and a status line name a margin pool.

An account has one cross pool, ``cross``, and one pool per isolated position,
``isolated:SYMBOL:SIDE`` (``SIDE`` is Binance's ``positionSide``: ``BOTH``, ``LONG`` or
``SHORT``). The worker and the executor both find a pool of an account's exact report by name.
"""

from __future__ import annotations

from marginwatch.engine.exact import AccountReport, PoolReport, PositionReport
from marginwatch.engine.types import Account, MarginMode, Position, PositionSide

CROSS_POOL = "cross"
SIDES = (PositionSide.BOTH, PositionSide.LONG, PositionSide.SHORT)  # in pool codes' order
_ISOLATED_POOL = "isolated:{symbol}:{side}"


def isolated_pool_name(symbol: str, side: PositionSide) -> str:
    """``isolated:SYMBOL:SIDE``."""
    return _ISOLATED_POOL.format(symbol=symbol, side=side.value)


def isolated_pool(position: Position) -> str:
    """Pool name of an isolated position."""
    return isolated_pool_name(position.symbol, position.position_side)


def margin_mode_of(pool: str) -> MarginMode:
    """``cross`` for the cross pool, else ``isolated``."""
    return MarginMode.CROSS if pool == CROSS_POOL else MarginMode.ISOLATED


def in_pool(position: Position, pool: str) -> bool:
    """Whether the position belongs to the named pool."""
    if pool == CROSS_POOL:
        return not position.is_isolated
    return position.is_isolated and isolated_pool(position) == pool


def open_pools(account: Account) -> set[str]:
    """The pools of an account that hold a position."""
    return {CROSS_POOL if not p.is_isolated else isolated_pool(p) for p in account.positions}


def pool_member(account_id: str, pool: str) -> str:
    """``account|pool``: a pool as a member of its partition's sets (open episodes, due
    liquidations)."""
    return f"{account_id}|{pool}"


def split_pool_member(member: str) -> tuple[str, str]:
    """(account id, pool) of an ``pool_member`` (a pool name holds no ``|``)."""
    account_id, _, pool = member.rpartition("|")
    return account_id, pool


def pool_symbols(account: Account, pool: str) -> list[str]:
    """Symbols whose marks move the pool."""
    return [position.symbol for position in account.positions if in_pool(position, pool)]


def pool_of(report: AccountReport, pool: str) -> tuple[PoolReport, list[PositionReport]] | None:
    """The pool's exact figures and its positions; ``None`` if the account has no such pool."""
    members = [member for member in report.positions if in_pool(member.position, pool)]
    if pool == CROSS_POOL:
        return report.cross, members
    return (members[0].pool, members) if members else None

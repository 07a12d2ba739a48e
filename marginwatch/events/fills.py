"""The rules of fills (``position_change``) and what other rules share: the market an event is
checked against, the side and tier checks, an isolated wallet after a change. Pure; see
``marginwatch.events.rules`` for the rules themselves, stated in its docstring."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.formulas import ZERO, initial_margin, notional
from marginwatch.engine.types import Account, MarginMode, Position, PositionSide
from marginwatch.events.account_update import (
    DEFAULT_LEVERAGE,
    find_position,
    other_legs,
    replace_position,
    side_mismatch,
)
from marginwatch.events.models import EventRejectedError, FundingFeeEvent, PositionChangeEvent


@dataclass(frozen=True, slots=True)
class Market:
    """What rules are checked against: latest marks and the bracket tables."""

    marks: Mapping[str, Decimal]
    tables: Mapping[str, BracketTable]


def show(number: Decimal) -> str:
    """A decimal for a message: plain notation, no trailing zeros."""
    return "0" if number == 0 else f"{number.normalize():f}"


def check_side(account: Account, side: PositionSide) -> None:
    mismatch = side_mismatch(account, side)
    if mismatch:
        raise EventRejectedError(f"position_side: {mismatch}")


def check_tier(
    symbol: str,
    leverage: int,
    size: Decimal,
    price: Decimal,
    tables: Mapping[str, BracketTable],
) -> None:
    """``leverage <= max leverage`` of the tier holding ``N = |Q| × price``."""
    table = tables.get(symbol)
    if table is None:
        raise EventRejectedError(f"symbol: no brackets for {symbol}")
    position_notional = notional(size, price)
    allowed = table.max_leverage_for(position_notional)
    if leverage > allowed:
        raise EventRejectedError(
            f"leverage: {leverage}x exceeds the {allowed}x maximum of the {symbol} tier "
            f"holding notional {show(position_notional)}"
        )


def position_change(account: Account, event: PositionChangeEvent, market: Market) -> Account:
    check_side(account, event.position_side)
    held = find_position(account, event.symbol, event.position_side)
    if event.quantity == 0:
        if held is None:
            raise EventRejectedError(
                f"quantity: no open {event.symbol} {event.position_side} position to close"
            )
        return _close(account, held, event)
    model = held or next(iter(other_legs(account, event.symbol, event.position_side)), None)
    mode, leverage = _settings(event, model)
    assert event.entry_price is not None  # checked by the model
    if _adds_exposure(held, event.quantity):
        price = market.marks.get(event.symbol, event.entry_price)
        check_tier(event.symbol, leverage, event.quantity, price, market.tables)
    if held is None:
        return _open(account, event, mode, leverage)
    return _resize(account, held, event)


def _settings(event: PositionChangeEvent, model: Position | None) -> tuple[MarginMode, int]:
    """Margin mode and leverage: the symbol's (which the event must match), else the event's."""
    if model is None:
        return event.margin_mode or MarginMode.CROSS, event.leverage or DEFAULT_LEVERAGE
    if event.margin_mode not in {None, model.margin_mode}:
        raise EventRejectedError(
            f"margin_mode: {event.symbol} is held in {model.margin_mode} mode "
            "(margin_mode_change once no position is open)"
        )
    if event.leverage not in {None, model.leverage}:
        raise EventRejectedError(
            f"leverage: {event.symbol} is held at {model.leverage}x "
            "(change it with leverage_change)"
        )
    return model.margin_mode, model.leverage


def _adds_exposure(held: Position | None, quantity: Decimal) -> bool:
    """A new position, a larger one, or a flip through zero (not a pure reduction)."""
    if held is None:
        return True
    flipped = (held.quantity > 0) != (quantity > 0)
    return flipped or abs(quantity) > abs(held.quantity)


def _close(account: Account, held: Position, event: PositionChangeEvent) -> Account:
    """Realized PnL − fee to the position's wallet; an isolated remainder returns to ``cw``."""
    result = event.realized_pnl - event.fee
    wallet = account.cross_wallet_balance
    if held.isolated_wallet is None:
        wallet += result
    else:
        wallet += max(ZERO, held.isolated_wallet + result)
    return replace_position(replace(account, cross_wallet_balance=wallet), held, None)


def _open(account: Account, event: PositionChangeEvent, mode: MarginMode, leverage: int) -> Account:
    """A new position; an isolated one takes its margin out of the cross wallet."""
    assert event.entry_price is not None
    result = event.realized_pnl - event.fee
    wallet = account.cross_wallet_balance
    isolated: Decimal | None = None
    if mode is MarginMode.ISOLATED:
        moved = event.isolated_wallet
        if moved is None:
            moved = initial_margin(notional(event.quantity, event.entry_price), leverage)
        if moved > wallet:
            raise EventRejectedError(
                f"isolated_wallet: moving {show(moved)} into the new isolated position "
                f"exceeds the cross wallet {show(wallet)}"
            )
        wallet -= moved
        isolated = isolated_after(event, moved, result, "realized_pnl")
    elif event.isolated_wallet is not None:
        raise EventRejectedError("isolated_wallet: only an isolated position has one")
    else:
        wallet += result
    position = Position(
        symbol=event.symbol,
        quantity=event.quantity,
        entry_price=event.entry_price,
        leverage=leverage,
        margin_mode=mode,
        position_side=event.position_side,
        isolated_wallet=isolated,
    )
    return replace_position(replace(account, cross_wallet_balance=wallet), None, position)


def _resize(account: Account, held: Position, event: PositionChangeEvent) -> Account:
    """A held position's new size and entry; PnL − fee to its wallet."""
    assert event.entry_price is not None
    if event.isolated_wallet is not None:
        raise EventRejectedError(
            "isolated_wallet: only when opening a position (move margin with isolated_margin)"
        )
    result = event.realized_pnl - event.fee
    wallet = account.cross_wallet_balance
    isolated = held.isolated_wallet
    if isolated is None:
        wallet += result
    else:
        isolated = isolated_after(event, isolated, result, "realized_pnl")
    position = replace(
        held, quantity=event.quantity, entry_price=event.entry_price, isolated_wallet=isolated
    )
    return replace_position(replace(account, cross_wallet_balance=wallet), held, position)


def isolated_after(
    event: PositionChangeEvent | FundingFeeEvent, wallet: Decimal, change: Decimal, field: str
) -> Decimal:
    """``iw + change``, which must not be negative."""
    after = wallet + change
    if after < 0:
        side = event.position_side or PositionSide.BOTH
        raise EventRejectedError(
            f"{field}: the isolated wallet of {event.symbol} {side} would go negative "
            f"({show(wallet)} + {show(change)})"
        )
    return after

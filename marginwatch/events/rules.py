"""Binance's rules for account events, pure: ``apply_event`` checks an event (parsed by
``marginwatch.events.models``) against the current account and returns the new account, or
raises ``EventRejectedError`` whose message names the field, e.g.
``amount: withdrawal of 500 exceeds the available 320.5``.

Rules (``Q`` signed amount, ``EP`` entry, ``MP`` mark, ``L`` leverage, ``cw`` cross wallet,
``iw`` isolated wallet; formulas of ``marginwatch.engine.formulas``):

* ``deposit``: ``cw += amount``.
* ``withdraw``: ``amount <= available``, where ``available = max(0, min(cw, cw + Σ UPNL −
  Σ IM))`` over the cross positions, ``UPNL = Q × (MP − EP)`` and ``IM = |Q| × MP / L`` (Binance's
  available balance, reference §2.1, without open orders; profits are not withdrawable beyond
  the wallet). Every open cross position needs a mark.
* ``position_change`` (a fill): sets the position to ``quantity``/``entry_price`` (``quantity`` 0
  closes). ``realized_pnl − fee`` goes to ``cw`` for a cross position and to ``iw`` for an
  isolated one; closing an isolated position returns ``max(0, iw)`` to ``cw`` (a deficit is the
  insurance fund's, reference §2.6). A new isolated position moves ``isolated_wallet`` (default
  ``|Q| × EP / L``) out of ``cw``, which must not go negative. A new position takes
  ``margin_mode``/``leverage`` from the symbol's other leg, else the event, else cross and 20x;
  for a held symbol they must match (change them with the events below). A fill that opens,
  grows or flips a position must respect the tier: ``L <= max leverage`` of the tier holding
  ``|Q| × MP`` (``× EP`` without a mark); a reducing fill is always accepted.
* ``isolated_margin``: for an open isolated position; ``amount > 0`` moves ``cw -> iw`` and must
  not exceed the cross ``available`` above; ``amount < 0`` moves back and must not exceed the
  ``removable = max(0, min(iw, iw + UPNL − IM))`` (the position keeps its initial margin).
* ``leverage_change``: every position of the symbol (or notional 0 without one) must fit:
  ``L <= max leverage`` of the tier holding its notional at mark (at entry without a mark). The
  account stores leverage only on positions, so without one the event is accepted and changes
  nothing (a later ``position_change`` carries its leverage).
* ``margin_mode_change``: refused while the symbol has an open position; otherwise accepted with
  no state change, as for leverage.
* ``funding_fee``: ``amount`` (signed wallet change) goes to ``cw`` for a cross position and to
  that position's ``iw`` for an isolated one (reference §7); ``position_side`` picks the leg when
  both hedge legs are isolated.
* ``account_update``: a Binance ``ACCOUNT_UPDATE`` mirrored (``marginwatch.events.account_update``).

An isolated wallet may not go negative (the account contract forbids it): such an event is
refused. Events for an account that does not exist are refused (``require_account``); accounts
are created by ``marginwatch accounts load``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from marginwatch.base.snapshot import AccountModel, describe_validation_error
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.formulas import ZERO, initial_margin, notional, unrealized_pnl
from marginwatch.engine.types import Account, Position
from marginwatch.events.account_update import (
    AccountUpdateRejectedError,
    apply_account_update,
    find_position,
    replace_position,
)
from marginwatch.events.fills import (
    Market,
    check_side,
    check_tier,
    isolated_after,
    position_change,
    show,
)
from marginwatch.events.models import (
    AccountEvent,
    AccountUpdateEvent,
    DepositEvent,
    EventRejectedError,
    FundingFeeEvent,
    IsolatedMarginEvent,
    LeverageChangeEvent,
    MarginModeChangeEvent,
    PositionChangeEvent,
    WithdrawEvent,
)


def require_account(account: Account | None) -> Account:
    """The account an event applies to; an unknown account is refused."""
    if account is None:
        raise EventRejectedError("account_id: unknown account")
    return account


def apply_event(
    account: Account,
    event: AccountEvent,
    marks: Mapping[str, Decimal],
    tables: Mapping[str, BracketTable],
) -> Account:
    """The account after ``event``; ``EventRejectedError`` when a rule refuses it."""
    if event.account_id != account.account_id:
        raise EventRejectedError(
            f"account_id: event for {event.account_id} applied to {account.account_id}"
        )
    try:
        updated = _RULES[type(event)](account, event, Market(marks, tables))
    except (ArithmeticError, AccountUpdateRejectedError) as error:
        where = "payload." if isinstance(error, AccountUpdateRejectedError) else "event: "
        raise EventRejectedError(f"{where}{error}") from None
    _check_contract(updated)
    return updated


def _check_contract(account: Account) -> None:
    """The result must be storable: the snapshot contract's account rules."""
    try:
        AccountModel.model_validate(
            {
                "account_id": account.account_id,
                "position_mode": account.position_mode,
                "cross_wallet_balance": account.cross_wallet_balance,
                "positions": [_position_document(p) for p in account.positions],
            }
        )
    except ValidationError as error:
        raise EventRejectedError(
            "account: " + describe_validation_error(error).removeprefix("snapshot: ")
        ) from None


def _position_document(position: Position) -> dict[str, Any]:
    document: dict[str, Any] = {
        "symbol": position.symbol,
        "position_side": position.position_side,
        "quantity": position.quantity,
        "entry_price": position.entry_price,
        "leverage": position.leverage,
        "margin_mode": position.margin_mode,
    }
    if position.isolated_wallet is not None:
        document["isolated_wallet"] = position.isolated_wallet
    return document


# ----------------------------------------------------------------------------- cross wallet


def available_balance(account: Account, marks: Mapping[str, Decimal]) -> Decimal:
    """``max(0, min(cw, cw + Σ UPNL − Σ IM))`` over the cross positions, at mark.

    What a withdrawal or a move into an isolated wallet may take; every open cross position
    needs a mark (else ``EventRejectedError`` about ``amount``).
    """
    upnl = ZERO
    margin = ZERO
    for position in account.positions:
        if position.is_isolated:
            continue
        mark = marks.get(position.symbol)
        if mark is None:
            raise EventRejectedError(
                f"amount: no mark price for {position.symbol} to value the open cross position"
            )
        upnl += unrealized_pnl(position.quantity, position.entry_price, mark)
        margin += initial_margin(notional(position.quantity, mark), position.leverage)
    wallet = account.cross_wallet_balance
    return max(ZERO, min(wallet, wallet + upnl - margin))


def _withdraw(account: Account, event: WithdrawEvent, marks: Mapping[str, Decimal]) -> Account:
    available = available_balance(account, marks)
    if event.amount > available:
        raise EventRejectedError(
            f"amount: withdrawal of {show(event.amount)} exceeds the available {show(available)}"
        )
    return replace(account, cross_wallet_balance=account.cross_wallet_balance - event.amount)


# ---------------------------------------------------------------------- margin and settings


def _isolated_margin(
    account: Account, event: IsolatedMarginEvent, marks: Mapping[str, Decimal]
) -> Account:
    check_side(account, event.position_side)
    held = find_position(account, event.symbol, event.position_side)
    if held is None or held.isolated_wallet is None:
        raise EventRejectedError(
            f"symbol: no open isolated {event.symbol} {event.position_side} position"
        )
    wallet = account.cross_wallet_balance
    if event.amount > 0:
        available = available_balance(account, marks)
        if event.amount > available:
            raise EventRejectedError(
                f"amount: adding {show(event.amount)} exceeds the available {show(available)}"
            )
    else:
        removable = _removable(held, marks)
        if -event.amount > removable:
            raise EventRejectedError(
                f"amount: removing {show(-event.amount)} exceeds the removable "
                f"{show(removable)} of the isolated {event.symbol} {event.position_side} position"
            )
    position = replace(held, isolated_wallet=held.isolated_wallet + event.amount)
    updated = replace(account, cross_wallet_balance=wallet - event.amount)
    return replace_position(updated, held, position)


def _removable(held: Position, marks: Mapping[str, Decimal]) -> Decimal:
    """``max(0, min(iw, iw + UPNL − IM))``: what leaves the initial margin in place."""
    wallet = held.isolated_wallet or ZERO
    mark = marks.get(held.symbol)
    if mark is None:
        raise EventRejectedError(f"symbol: no mark price for {held.symbol}")
    upnl = unrealized_pnl(held.quantity, held.entry_price, mark)
    margin = initial_margin(notional(held.quantity, mark), held.leverage)
    return max(ZERO, min(wallet, wallet + upnl - margin))


def _leverage_change(account: Account, event: LeverageChangeEvent, market: Market) -> Account:
    legs = [p for p in account.positions if p.symbol == event.symbol]
    if not legs:
        check_tier(event.symbol, event.leverage, ZERO, ZERO, market.tables)
        return account
    for leg in legs:
        price = market.marks.get(event.symbol, leg.entry_price)
        check_tier(event.symbol, event.leverage, leg.quantity, price, market.tables)
    for leg in legs:
        account = replace_position(account, leg, replace(leg, leverage=event.leverage))
    return account


def _margin_mode_change(account: Account, event: MarginModeChangeEvent) -> Account:
    if any(p.symbol == event.symbol for p in account.positions):
        raise EventRejectedError(
            f"margin_mode: cannot change the {event.symbol} margin mode while a position is open"
        )
    return account


def _funding_fee(account: Account, event: FundingFeeEvent) -> Account:
    """``amount`` to ``cw`` (cross) or to the funded position's ``iw`` (isolated)."""
    legs = [
        p
        for p in account.positions
        if p.symbol == event.symbol and event.position_side in {None, p.position_side}
    ]
    if not legs:
        side = f" {event.position_side}" if event.position_side else ""
        raise EventRejectedError(f"symbol: no open {event.symbol}{side} position to fund")
    leg = legs[0]
    if leg.isolated_wallet is None:
        return replace(account, cross_wallet_balance=account.cross_wallet_balance + event.amount)
    if len(legs) > 1:
        raise EventRejectedError(
            f"position_side: required: both {event.symbol} legs are isolated (LONG or SHORT)"
        )
    funded = isolated_after(event, leg.isolated_wallet, event.amount, "amount")
    return replace_position(account, leg, replace(leg, isolated_wallet=funded))


def _deposit(account: Account, event: DepositEvent, market: Market) -> Account:
    return replace(account, cross_wallet_balance=account.cross_wallet_balance + event.amount)


# The rule of each event type (``account`` before, the event, the market) -> account after.
_RULES: dict[type[Any], Callable[[Account, Any, Market], Account]] = {
    DepositEvent: _deposit,
    WithdrawEvent: lambda account, event, market: _withdraw(account, event, market.marks),
    PositionChangeEvent: position_change,
    IsolatedMarginEvent: lambda account, event, market: _isolated_margin(
        account, event, market.marks
    ),
    LeverageChangeEvent: _leverage_change,
    MarginModeChangeEvent: lambda account, event, _market: _margin_mode_change(account, event),
    FundingFeeEvent: lambda account, event, _market: _funding_fee(account, event),
    AccountUpdateEvent: lambda account, event, _market: apply_account_update(
        account, event.payload
    ),
}

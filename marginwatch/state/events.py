"""Account events from the venue's trading core: models, validation and application, pure.

An event is a JSON object with a ``type`` (the discriminator), the ``account_id``, an optional
``event_id`` (the idempotency key of the applier) and an optional ``event_time`` (ms). Numbers
are JSON numbers or decimal strings and become exact ``Decimal``. ``parse_event`` validates the
shape; ``apply_event`` checks Binance's rules against the current account and returns the new
account. Both raise ``EventRejectedError`` whose message names the field, e.g.
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
* ``account_update``: a Binance ``ACCOUNT_UPDATE`` mirrored (``marginwatch.state.account_update``).

An isolated wallet may not go negative (the account contract forbids it): such an event is
refused. Events for an account that does not exist are refused (``require_account``); accounts
are created by ``marginwatch accounts load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.formulas import ZERO, initial_margin, notional, unrealized_pnl
from marginwatch.engine.types import Account, MarginMode, Position, PositionSide
from marginwatch.snapshot import (
    AccountModel,
    DecimalNumber,
    FieldError,
    NonNegativeNumber,
    PositiveNumber,
    Symbol,
    decimal_json,
    describe_validation_error,
    field_path,
)
from marginwatch.state.account_update import (
    DEFAULT_LEVERAGE,
    AccountUpdatePayload,
    AccountUpdateRejectedError,
    apply_account_update,
    find_position,
    other_legs,
    replace_position,
    side_mismatch,
    sign_mismatch,
)


@dataclass(frozen=True, slots=True)
class _Market:
    """What rules are checked against: latest marks and the bracket tables."""

    marks: Mapping[str, Decimal]
    tables: Mapping[str, BracketTable]


class EventRejectedError(ValueError):
    """A malformed event or one Binance's rules refuse; ``reason`` names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    return value


Leverage = Annotated[int, Field(ge=1), BeforeValidator(_no_bool)]
Milliseconds = Annotated[int, Field(ge=0), BeforeValidator(_no_bool)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_id: str = Field(min_length=1, max_length=128)
    event_id: str | None = Field(None, min_length=1, max_length=256)
    event_time: Milliseconds | None = None

    def applied_to(self, account: Account, market: _Market) -> Account:
        """The account after this event (each event type states its rule)."""
        raise NotImplementedError


class DepositEvent(_Event):
    """Transfer into the futures wallet: ``cw += amount``."""

    type: Literal["deposit"]
    amount: PositiveNumber

    def applied_to(self, account: Account, market: _Market) -> Account:
        return replace(account, cross_wallet_balance=account.cross_wallet_balance + self.amount)


class WithdrawEvent(_Event):
    """Transfer out: ``amount <= available`` (see the module docstring)."""

    type: Literal["withdraw"]
    amount: PositiveNumber

    def applied_to(self, account: Account, market: _Market) -> Account:
        return _withdraw(account, self, market.marks)


class PositionChangeEvent(_Event):
    """A fill: the position's new signed ``quantity`` and average ``entry_price``."""

    type: Literal["position_change"]
    symbol: Symbol
    position_side: PositionSide = PositionSide.BOTH
    quantity: DecimalNumber
    entry_price: PositiveNumber | None = None
    realized_pnl: DecimalNumber = ZERO
    fee: NonNegativeNumber = ZERO
    margin_mode: MarginMode | None = None
    leverage: Leverage | None = None
    isolated_wallet: NonNegativeNumber | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PositionChangeEvent:
        mismatch = sign_mismatch(self.position_side, self.quantity)
        if mismatch:
            raise FieldError("quantity", mismatch)
        if self.quantity != 0 and self.entry_price is None:
            raise FieldError("entry_price", "required unless quantity is 0")
        if self.margin_mode is MarginMode.CROSS and self.isolated_wallet is not None:
            raise FieldError("isolated_wallet", "only an isolated position has one")
        return self

    def applied_to(self, account: Account, market: _Market) -> Account:
        return _position_change(account, self, market)


class IsolatedMarginEvent(_Event):
    """Move margin into (``amount > 0``) or out of (``< 0``) an isolated position."""

    type: Literal["isolated_margin"]
    symbol: Symbol
    position_side: PositionSide = PositionSide.BOTH
    amount: DecimalNumber

    @model_validator(mode="after")
    def _nonzero(self) -> IsolatedMarginEvent:
        if self.amount == 0:
            raise FieldError("amount", "must not be zero")
        return self

    def applied_to(self, account: Account, market: _Market) -> Account:
        return _isolated_margin(account, self, market.marks)


class LeverageChangeEvent(_Event):
    """Set the leverage of the symbol's positions."""

    type: Literal["leverage_change"]
    symbol: Symbol
    leverage: Leverage

    def applied_to(self, account: Account, market: _Market) -> Account:
        return _leverage_change(account, self, market)


class MarginModeChangeEvent(_Event):
    """Switch the symbol between cross and isolated (only with no open position)."""

    type: Literal["margin_mode_change"]
    symbol: Symbol
    margin_mode: MarginMode

    def applied_to(self, account: Account, market: _Market) -> Account:
        return _margin_mode_change(account, self)


class FundingFeeEvent(_Event):
    """A funding settlement: ``amount`` is the wallet change (negative = paid)."""

    type: Literal["funding_fee"]
    symbol: Symbol
    position_side: PositionSide | None = None
    amount: DecimalNumber

    def applied_to(self, account: Account, market: _Market) -> Account:
        return _funding_fee(account, self)


class AccountUpdateEvent(_Event):
    """A Binance ``ACCOUNT_UPDATE`` (the whole user-data event) for ``account_id``."""

    type: Literal["account_update"]
    payload: AccountUpdatePayload

    def applied_to(self, account: Account, market: _Market) -> Account:
        return apply_account_update(account, self.payload)


AccountEvent = Annotated[
    DepositEvent
    | WithdrawEvent
    | PositionChangeEvent
    | IsolatedMarginEvent
    | LeverageChangeEvent
    | MarginModeChangeEvent
    | FundingFeeEvent
    | AccountUpdateEvent,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "deposit",
    "withdraw",
    "position_change",
    "isolated_margin",
    "leverage_change",
    "margin_mode_change",
    "funding_fee",
    "account_update",
)

_ADAPTER: TypeAdapter[AccountEvent] = TypeAdapter(AccountEvent)

# ----------------------------------------------------------------------------------- parsing


def parse_event(fields: Mapping[bytes | str, bytes | str]) -> AccountEvent:
    """The event of a stream entry: exactly one field ``event`` holding the event JSON."""
    names = {_text(name) for name in fields}
    if "event" not in names:
        raise EventRejectedError("event: missing (the entry holds one field, event)")
    if names != {"event"}:
        extra = ", ".join(sorted(names - {"event"}))
        raise EventRejectedError(f"{extra}: unexpected stream field (only event)")
    value = next(v for k, v in fields.items() if _text(k) == "event")
    return parse_event_json(value)


def parse_event_json(text: str | bytes) -> AccountEvent:
    """Parse and validate one event document; numbers are read as ``Decimal``."""
    try:
        document = decimal_json(text, "event")
    except FieldError as error:
        raise EventRejectedError(str(error)) from None
    return validate_event(document)


def validate_event(document: Any) -> AccountEvent:
    """Validate an already decoded event document."""
    try:
        return _ADAPTER.validate_python(document)
    except ValidationError as error:
        raise EventRejectedError(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    """``field: message`` of the first error, the union's tag left out of the path."""
    first = error.errors()[0]
    kind = first["type"]
    if kind == "union_tag_not_found":
        return f"type: required, one of {', '.join(EVENT_TYPES)}"
    if kind == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag")
        return f"type: unknown event type {tag!r} (one of {', '.join(EVENT_TYPES)})"
    if kind in {"model_attributes_type", "dict_type", "model_type"} and not first["loc"]:
        return "event: must be a JSON object"
    loc = tuple(first["loc"])
    if loc and loc[0] in EVENT_TYPES:
        loc = loc[1:]
    where = field_path(loc)
    message = str(first["msg"]).removeprefix("Value error, ")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        where = f"{where}.{cause.field}" if where else cause.field
        message = cause.reason
    more = len(error.errors()) - 1
    return f"{where or 'event'}: {message}" + (f" (and {more} more)" if more else "")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# ------------------------------------------------------------------------------- application


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
        updated = event.applied_to(account, _Market(marks, tables))
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


def _show(number: Decimal) -> str:
    """A decimal for a message: plain notation, no trailing zeros."""
    return "0" if number == 0 else f"{number.normalize():f}"


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
            f"amount: withdrawal of {_show(event.amount)} exceeds the available {_show(available)}"
        )
    return replace(account, cross_wallet_balance=account.cross_wallet_balance - event.amount)


# -------------------------------------------------------------------------------- positions


def _check_side(account: Account, side: PositionSide) -> None:
    mismatch = side_mismatch(account, side)
    if mismatch:
        raise EventRejectedError(f"position_side: {mismatch}")


def _check_tier(
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
            f"holding notional {_show(position_notional)}"
        )


def _position_change(account: Account, event: PositionChangeEvent, market: _Market) -> Account:
    _check_side(account, event.position_side)
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
        _check_tier(event.symbol, leverage, event.quantity, price, market.tables)
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
                f"isolated_wallet: moving {_show(moved)} into the new isolated position "
                f"exceeds the cross wallet {_show(wallet)}"
            )
        wallet -= moved
        isolated = _isolated_after(event, moved, result, "realized_pnl")
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
        isolated = _isolated_after(event, isolated, result, "realized_pnl")
    position = replace(
        held, quantity=event.quantity, entry_price=event.entry_price, isolated_wallet=isolated
    )
    return replace_position(replace(account, cross_wallet_balance=wallet), held, position)


def _isolated_after(
    event: PositionChangeEvent | FundingFeeEvent, wallet: Decimal, change: Decimal, field: str
) -> Decimal:
    """``iw + change``, which must not be negative."""
    after = wallet + change
    if after < 0:
        side = event.position_side or PositionSide.BOTH
        raise EventRejectedError(
            f"{field}: the isolated wallet of {event.symbol} {side} would go negative "
            f"({_show(wallet)} + {_show(change)})"
        )
    return after


# ---------------------------------------------------------------------- margin and settings


def _isolated_margin(
    account: Account, event: IsolatedMarginEvent, marks: Mapping[str, Decimal]
) -> Account:
    _check_side(account, event.position_side)
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
                f"amount: adding {_show(event.amount)} exceeds the available {_show(available)}"
            )
    else:
        removable = _removable(held, marks)
        if -event.amount > removable:
            raise EventRejectedError(
                f"amount: removing {_show(-event.amount)} exceeds the removable "
                f"{_show(removable)} of the isolated {event.symbol} {event.position_side} position"
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


def _leverage_change(account: Account, event: LeverageChangeEvent, market: _Market) -> Account:
    legs = [p for p in account.positions if p.symbol == event.symbol]
    if not legs:
        _check_tier(event.symbol, event.leverage, ZERO, ZERO, market.tables)
        return account
    for leg in legs:
        price = market.marks.get(event.symbol, leg.entry_price)
        _check_tier(event.symbol, event.leverage, leg.quantity, price, market.tables)
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
    funded = _isolated_after(event, leg.isolated_wallet, event.amount, "amount")
    return replace_position(account, leg, replace(leg, isolated_wallet=funded))

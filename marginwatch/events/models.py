"""Account events from the venue's trading core: their models and parsing, pure.

An event is a JSON object with a ``type`` (the discriminator), the ``account_id``, an optional
``event_id`` (the idempotency key of the applier) and an optional ``event_time`` (ms). Numbers
are JSON numbers or decimal strings and become exact ``Decimal``. ``parse_event`` validates the
shape and raises ``EventRejectedError`` whose message names the field, e.g.
``amount: must be greater than 0``. The rules that apply an event to an account are in
``marginwatch.events.rules``.
"""

from __future__ import annotations

from collections.abc import Mapping
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

from marginwatch.base.snapshot import (
    DecimalNumber,
    FieldError,
    NonNegativeNumber,
    PositiveNumber,
    Symbol,
    decimal_json,
    field_path,
)
from marginwatch.engine.formulas import ZERO
from marginwatch.engine.types import MarginMode, PositionSide
from marginwatch.events.account_update import AccountUpdatePayload, sign_mismatch


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


class DepositEvent(_Event):
    """Transfer into the futures wallet: ``cw += amount``."""

    type: Literal["deposit"]
    amount: PositiveNumber


class WithdrawEvent(_Event):
    """Transfer out: ``amount <= available`` (see the module docstring)."""

    type: Literal["withdraw"]
    amount: PositiveNumber


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


class LeverageChangeEvent(_Event):
    """Set the leverage of the symbol's positions."""

    type: Literal["leverage_change"]
    symbol: Symbol
    leverage: Leverage


class MarginModeChangeEvent(_Event):
    """Switch the symbol between cross and isolated (only with no open position)."""

    type: Literal["margin_mode_change"]
    symbol: Symbol
    margin_mode: MarginMode


class FundingFeeEvent(_Event):
    """A funding settlement: ``amount`` is the wallet change (negative = paid)."""

    type: Literal["funding_fee"]
    symbol: Symbol
    position_side: PositionSide | None = None
    amount: DecimalNumber


class AccountUpdateEvent(_Event):
    """A Binance ``ACCOUNT_UPDATE`` (the whole user-data event) for ``account_id``."""

    type: Literal["account_update"]
    payload: AccountUpdatePayload


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

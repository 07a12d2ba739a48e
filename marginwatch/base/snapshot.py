"""The snapshot contract (input of ``marginwatch evaluate`` and ``accounts load``), validated.

Numbers arrive as JSON numbers or decimal strings and become ``Decimal`` without passing
through binary floats (``parse_snapshot`` reads JSON numbers as ``Decimal``). Every rejection
names the field, e.g. ``accounts[0].positions[1].quantity: must not be zero``.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from marginwatch.engine.brackets import BracketTable, BracketTableError, default_tables
from marginwatch.engine.types import (
    Account,
    Bracket,
    MarginMode,
    Position,
    PositionMode,
    PositionSide,
    Venue,
)


class SnapshotError(ValueError):
    """Invalid snapshot; ``str()`` is one line naming the field."""


# What a number may arrive as, checked first by type alone (a bool is none of them).
_NUMBER_TYPES = frozenset({str, int, float, Decimal})


def _to_decimal(value: Any) -> Decimal:
    if type(value) not in _NUMBER_TYPES and (
        isinstance(value, bool) or not isinstance(value, int | float | str | Decimal)
    ):
        raise ValueError("must be a number or a decimal string")
    try:
        number = Decimal(value.strip() if type(value) is str else str(value))
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise ValueError("must be finite")
    return number


def _to_positive(value: Any) -> Decimal:
    number = _to_decimal(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _to_non_negative(value: Any) -> Decimal:
    number = _to_decimal(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _to_nonzero_quantity(value: Any) -> Decimal:
    number = _to_decimal(value)
    if number == 0:
        raise ValueError("must not be zero (a closed position is left out)")
    return number


# One validator each (one call per field): numbers read exactly, then their sign checked.
DecimalNumber = Annotated[Decimal, BeforeValidator(_to_decimal)]
PositiveNumber = Annotated[Decimal, BeforeValidator(_to_positive)]
NonNegativeNumber = Annotated[Decimal, BeforeValidator(_to_non_negative)]
NonZeroQuantity = Annotated[Decimal, BeforeValidator(_to_nonzero_quantity)]
Symbol = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Z0-9]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BracketModel(_Strict):
    """One tier, as in the snapshot's ``brackets`` (names of the domain, not Binance's)."""

    notional_floor: NonNegativeNumber
    notional_cap: PositiveNumber
    max_leverage: int = Field(ge=1)
    maintenance_margin_rate: NonNegativeNumber
    maintenance_amount: DecimalNumber

    def to_domain(self) -> Bracket:
        return Bracket(
            self.notional_floor,
            self.notional_cap,
            self.max_leverage,
            self.maintenance_margin_rate,
            self.maintenance_amount,
        )


class PositionModel(_Strict):
    """A position: ``quantity`` is Binance's signed ``positionAmt``."""

    symbol: Symbol
    position_side: PositionSide = PositionSide.BOTH
    quantity: NonZeroQuantity
    entry_price: PositiveNumber
    leverage: int = Field(ge=1)
    margin_mode: MarginMode
    isolated_wallet: NonNegativeNumber | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PositionModel:
        if self.position_side is PositionSide.LONG and self.quantity < 0:
            raise _field_error("quantity", "a LONG leg's quantity must be positive")
        if self.position_side is PositionSide.SHORT and self.quantity > 0:
            raise _field_error("quantity", "a SHORT leg's quantity must be negative (positionAmt)")
        isolated = self.margin_mode is MarginMode.ISOLATED
        if isolated and self.isolated_wallet is None:
            raise _field_error("isolated_wallet", "required for an isolated position")
        if not isolated and self.isolated_wallet is not None:
            raise _field_error("isolated_wallet", "only an isolated position has one")
        return self

    def to_domain(self) -> Position:
        return Position(
            symbol=self.symbol,
            quantity=self.quantity,
            entry_price=self.entry_price,
            leverage=self.leverage,
            margin_mode=self.margin_mode,
            position_side=self.position_side,
            isolated_wallet=self.isolated_wallet,
        )


class AccountModel(_Strict):
    """An account and its open positions."""

    account_id: str = Field(min_length=1, max_length=128)
    position_mode: PositionMode = PositionMode.ONE_WAY
    cross_wallet_balance: DecimalNumber
    positions: list[PositionModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _legs_fit_mode(self) -> AccountModel:
        hedge = self.position_mode is PositionMode.HEDGE
        seen: dict[tuple[str, PositionSide], int] = {}
        modes: dict[str, MarginMode] = {}
        for k, position in enumerate(self.positions):
            field = f"positions[{k}]"
            if hedge == (position.position_side is PositionSide.BOTH):
                expected = "LONG or SHORT" if hedge else "BOTH"
                raise _field_error(
                    f"{field}.position_side",
                    f"a {self.position_mode.value} account holds {expected} positions",
                )
            key = (position.symbol, position.position_side)
            if key in seen:
                raise _field_error(field, f"duplicates positions[{seen[key]}] ({key[0]} {key[1]})")
            seen[key] = k
            if modes.setdefault(position.symbol, position.margin_mode) != position.margin_mode:
                raise _field_error(
                    f"{field}.margin_mode", f"both legs of {position.symbol} share one margin mode"
                )
        return self

    def to_domain(self) -> Account:
        return Account(
            account_id=self.account_id,
            cross_wallet_balance=self.cross_wallet_balance,
            positions=tuple(position.to_domain() for position in self.positions),
            position_mode=self.position_mode,
        )


class SnapshotModel(_Strict):
    """The whole snapshot: marks, optional bracket overrides, accounts."""

    venue: Venue = Venue.BINANCE
    mark_prices: dict[Symbol, PositiveNumber]
    brackets: dict[Symbol, list[BracketModel]] | None = None
    accounts: list[AccountModel]


class FieldError(ValueError):
    """Raised by a model validator about one of the model's fields (``field`` is relative)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _field_error(field: str, reason: str) -> FieldError:
    return FieldError(field, reason)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``accounts[0].positions[1].quantity`` from pydantic's ``('accounts', 0, ...)``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe_validation_error(error: ValidationError, document: str = "snapshot") -> str:
    """One line: ``field.path: message`` for the first error, and how many more there are
    (``document: message`` when the fault is the whole document)."""
    errors = error.errors()
    first = errors[0]
    where = field_path(tuple(first["loc"]))
    message = str(first["msg"]).removeprefix("Value error, ")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        where = f"{where}.{cause.field}" if where else cause.field
        message = cause.reason
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where or document}: {message}{more}"


class Snapshot:
    """A validated snapshot in domain terms: accounts, marks and every symbol's brackets."""

    def __init__(
        self,
        venue: Venue,
        mark_prices: Mapping[str, Decimal],
        tables: Mapping[str, BracketTable],
        accounts: tuple[Account, ...],
    ) -> None:
        self.venue = venue
        self.mark_prices = dict(mark_prices)
        self.tables = dict(tables)
        self.accounts = accounts


def parse_snapshot(
    text: str | bytes, base_tables: Mapping[str, BracketTable] | None = None
) -> Snapshot:
    """Parse and validate a snapshot document; raise ``SnapshotError`` naming the field."""
    with collector_paused():
        return _parse_snapshot(text, base_tables)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off: a large document allocates millions of
    objects that all survive, and every collection would walk all of them again (a snapshot
    of 100,000 accounts parses in about a quarter of the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_snapshot(text: str | bytes, base_tables: Mapping[str, BracketTable] | None) -> Snapshot:
    try:
        document = decimal_json(text, "snapshot")
    except FieldError as error:
        raise SnapshotError(str(error)) from None
    try:
        model = SnapshotModel.model_validate(document)
    except ValidationError as error:
        raise SnapshotError(describe_validation_error(error)) from None
    return snapshot_from_model(model, base_tables)


def decimal_json(text: str | bytes, document: str) -> Any:
    """JSON with every number read as ``Decimal`` (no binary floats); ``NaN``/``Infinity`` and
    broken JSON raise ``FieldError`` naming ``document``."""

    def reject(name: str) -> None:
        raise FieldError(document, f"{name} is not a valid number")

    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=reject)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FieldError(document, f"not valid JSON ({error})") from None


def snapshot_from_model(
    model: SnapshotModel, base_tables: Mapping[str, BracketTable] | None = None
) -> Snapshot:
    """Resolve brackets (snapshot overrides the base table) and check cross-field rules."""
    tables = dict(default_tables() if base_tables is None else base_tables)
    for symbol, rows in (model.brackets or {}).items():
        try:
            tables[symbol] = BracketTable(symbol, tuple(row.to_domain() for row in rows))
        except BracketTableError as error:
            raise SnapshotError(str(error)) from None
    for a, account in enumerate(model.accounts):
        for k, position in enumerate(account.positions):
            _check_position_refs(f"accounts[{a}].positions[{k}]", position, model, tables)
    accounts = tuple(account.to_domain() for account in model.accounts)
    return Snapshot(model.venue, model.mark_prices, tables, accounts)


def _check_position_refs(
    field: str,
    position: PositionModel,
    model: SnapshotModel,
    tables: Mapping[str, BracketTable],
) -> None:
    if position.symbol not in model.mark_prices:
        raise SnapshotError(f"{field}.symbol: no mark price for {position.symbol}")
    if position.symbol not in tables:
        raise SnapshotError(f"{field}.symbol: no brackets for {position.symbol}")
    notional = abs(position.quantity) * model.mark_prices[position.symbol]
    allowed = tables[position.symbol].max_leverage_for(notional)
    if position.leverage > allowed:
        raise SnapshotError(
            f"{field}.leverage: {position.leverage}x exceeds the {allowed}x maximum of the "
            f"{position.symbol} tier holding notional {notional.normalize():f}"
        )

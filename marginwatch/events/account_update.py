"""Binance ``ACCOUNT_UPDATE`` (reference §4.2) applied to an account as a mirror, pure.

The exchange is authoritative: the update *sets* state rather than adding to it.

* ``a.B``: the ``USDT`` entry's ``cw`` becomes the cross wallet balance (other assets and
  ``wb``/``bc`` are ignored: single-asset USDT margin).
* ``a.P``: each entry sets the position ``(s, ps)``: ``pa`` its signed amount (``0`` closes it;
  a ``pa`` 0 entry of a side not held, such as the ``BOTH`` row Binance sends in hedge mode,
  changes nothing),
  ``ep`` its entry price, ``mt`` its margin mode (``cross``/``isolated``, also the
  ``CROSSED``/``ISOLATED`` spelling of MARGIN_CALL), ``iw`` its isolated wallet (isolated only;
  the ``iw`` of a cross entry is ignored). Positions absent from ``P`` are unchanged.
* A field absent from a ``P`` entry keeps the held position's value, which covers the
  abbreviated ``FUNDING_FEE`` variant: only ``B`` for a cross position, ``B`` and the one
  isolated position for an isolated one. For a position not held yet, ``pa`` and (unless ``pa``
  is 0) ``ep`` are required; ``mt`` defaults to the other leg's mode, else ``cross``.
* The update carries no leverage: a new position takes its other leg's leverage, else
  Binance's default 20x. Leverage tiers are not checked (the exchange already accepted it).

Unknown Binance fields (``up``, ``cr``, ``bep``, ``wb``, ``bc`` …) are ignored, since Binance
adds fields over time. Messages name the field inside the payload, e.g. ``a.P[0].ep: ...``.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from marginwatch.base.snapshot import DecimalNumber, NonNegativeNumber, Symbol
from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, PositionSide

SETTLEMENT_ASSET = "USDT"
DEFAULT_LEVERAGE = 20


class AccountUpdateRejectedError(ValueError):
    """An update that cannot be mirrored; ``str()`` names the field inside the payload."""


def _margin_type(value: Any) -> Any:
    """``cross``/``crossed``/``CROSSED`` -> ``cross``; ``isolated``/``ISOLATED`` -> ``isolated``."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        return "cross" if lowered == "crossed" else lowered
    return value


MarginType = Annotated[MarginMode, BeforeValidator(_margin_type)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class BalanceEntry(_Payload):
    """One ``a.B`` entry: asset and cross wallet balance."""

    asset: str = Field(alias="a", min_length=1)
    cross_wallet: DecimalNumber | None = Field(None, alias="cw")


class PositionEntry(_Payload):
    """One ``a.P`` entry; absent fields keep the held position's values."""

    symbol: Symbol = Field(alias="s")
    position_side: PositionSide = Field(PositionSide.BOTH, alias="ps")
    amount: DecimalNumber | None = Field(None, alias="pa")
    entry_price: NonNegativeNumber | None = Field(None, alias="ep")
    margin_type: MarginType | None = Field(None, alias="mt")
    isolated_wallet: NonNegativeNumber | None = Field(None, alias="iw")


class UpdateData(_Payload):
    """The ``a`` object: reason, balances, positions."""

    reason: str = Field("", alias="m")
    balances: list[BalanceEntry] = Field(default_factory=list, alias="B")
    positions: list[PositionEntry] = Field(default_factory=list, alias="P")


class AccountUpdatePayload(_Payload):
    """A whole ``ACCOUNT_UPDATE`` event as the user-data stream sends it."""

    event_type: Literal["ACCOUNT_UPDATE"] = Field("ACCOUNT_UPDATE", alias="e")
    event_time: int | None = Field(None, alias="E", ge=0)
    transaction_time: int | None = Field(None, alias="T", ge=0)
    data: UpdateData = Field(alias="a")


def find_position(account: Account, symbol: str, side: PositionSide) -> Position | None:
    """The open position ``(symbol, side)`` of ``account``, if any."""
    for position in account.positions:
        if position.symbol == symbol and position.position_side is side:
            return position
    return None


def other_legs(account: Account, symbol: str, side: PositionSide) -> list[Position]:
    """The positions of ``symbol`` other than the ``side`` leg (the other hedge leg)."""
    return [p for p in account.positions if p.symbol == symbol and p.position_side is not side]


def replace_position(account: Account, old: Position | None, new: Position | None) -> Account:
    """``old`` replaced by ``new`` in place; ``old=None`` appends, ``new=None`` removes."""
    positions = [p for p in account.positions if p is not old]
    if new is not None:
        index = account.positions.index(old) if old is not None else len(positions)
        positions.insert(index, new)
    return replace(account, positions=tuple(positions))


def side_mismatch(account: Account, side: PositionSide) -> str | None:
    """Why ``side`` does not fit the account's position mode (BOTH one-way, LONG/SHORT hedge)."""
    hedge = account.position_mode is PositionMode.HEDGE
    if hedge != (side is PositionSide.BOTH):
        return None
    expected = "LONG or SHORT" if hedge else "BOTH"
    return f"a {account.position_mode.value} account holds {expected} positions"


def sign_mismatch(side: PositionSide, quantity: Decimal) -> str | None:
    """Why ``quantity`` (signed ``positionAmt``) does not fit a LONG or SHORT leg."""
    if side is PositionSide.LONG and quantity < 0:
        return "a LONG leg's quantity must not be negative"
    if side is PositionSide.SHORT and quantity > 0:
        return "a SHORT leg's quantity must not be positive (positionAmt)"
    return None


def apply_account_update(account: Account, payload: AccountUpdatePayload) -> Account:
    """The account after mirroring ``payload``: the USDT ``cw``, then each ``P`` entry in order."""
    for balance in payload.data.balances:
        if balance.asset == SETTLEMENT_ASSET and balance.cross_wallet is not None:
            account = replace(account, cross_wallet_balance=balance.cross_wallet)
    for index, entry in enumerate(payload.data.positions):
        account = _mirror_position(account, entry, f"a.P[{index}]")
    return account


def _reject(field: str, reason: str) -> AccountUpdateRejectedError:
    return AccountUpdateRejectedError(f"{field}: {reason}")


def _mirror_position(account: Account, entry: PositionEntry, where: str) -> Account:
    """Set (or close) the position ``(s, ps)`` from one ``P`` entry."""
    held = find_position(account, entry.symbol, entry.position_side)
    amount = entry.amount if entry.amount is not None else (held.quantity if held else None)
    if amount is None:
        raise _reject(f"{where}.pa", f"required: no {entry.symbol} {entry.position_side} is held")
    if amount == 0:
        return replace_position(account, held, None) if held else account
    mismatch = side_mismatch(account, entry.position_side)
    if mismatch:
        raise _reject(f"{where}.ps", mismatch)
    mismatch = sign_mismatch(entry.position_side, amount)
    if mismatch:
        raise _reject(f"{where}.pa", mismatch)
    return replace_position(account, held, _mirrored(account, entry, held, amount, where))


def _mirrored(
    account: Account, entry: PositionEntry, held: Position | None, amount: Decimal, where: str
) -> Position:
    others = other_legs(account, entry.symbol, entry.position_side)
    model = held or (others[0] if others else None)
    mode = entry.margin_type or (model.margin_mode if model else MarginMode.CROSS)
    if others and others[0].margin_mode is not mode:
        raise _reject(f"{where}.mt", f"both legs of {entry.symbol} share one margin mode")
    entry_price = entry.entry_price if entry.entry_price else (held.entry_price if held else None)
    if entry_price is None:
        raise _reject(f"{where}.ep", "required (positive) for an open position")
    return Position(
        symbol=entry.symbol,
        quantity=amount,
        entry_price=entry_price,
        leverage=model.leverage if model else DEFAULT_LEVERAGE,
        margin_mode=mode,
        position_side=entry.position_side,
        isolated_wallet=_isolated_wallet(entry, held, mode, where),
    )


def _isolated_wallet(
    entry: PositionEntry, held: Position | None, mode: MarginMode, where: str
) -> Decimal | None:
    """``iw`` for an isolated position (else the held one's wallet); ``None`` for cross."""
    if mode is MarginMode.CROSS:
        return None
    if entry.isolated_wallet is not None:
        return entry.isolated_wallet
    if held is not None and held.isolated_wallet is not None:
        return held.isolated_wallet
    raise _reject(f"{where}.iw", "required for an isolated position")

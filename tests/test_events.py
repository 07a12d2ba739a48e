"""Account events: parsing, every event type's rule, and each refusal's message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.formulas import ZERO
from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, PositionSide
from marginwatch.events.models import (
    DepositEvent,
    EventRejectedError,
    PositionChangeEvent,
    parse_event,
    parse_event_json,
)
from marginwatch.events.rules import (
    apply_event,
    require_account,
)
from tests.tables import BTC_2024, flat

TABLES: dict[str, BracketTable] = {"BTCUSDT": BTC_2024, "ETHUSDT": flat("ETHUSDT", "0.005")}
MARKS = {"BTCUSDT": Decimal("48000"), "ETHUSDT": Decimal("2400")}


def cross(quantity: str, entry: str, leverage: int = 20, symbol: str = "BTCUSDT") -> Position:
    """A one-way cross position."""
    return Position(symbol, Decimal(quantity), Decimal(entry), leverage, MarginMode.CROSS)


def isolated(
    quantity: str,
    entry: str,
    wallet: str,
    leverage: int = 10,
    symbol: str = "BTCUSDT",
    side: PositionSide = PositionSide.BOTH,
) -> Position:
    """An isolated position with its wallet."""
    return Position(
        symbol,
        Decimal(quantity),
        Decimal(entry),
        leverage,
        MarginMode.ISOLATED,
        side,
        Decimal(wallet),
    )


def account(wallet: str = "1000", *positions: Position, hedge: bool = False) -> Account:
    """Account ``a1`` with a cross wallet and positions."""
    mode = PositionMode.HEDGE if hedge else PositionMode.ONE_WAY
    return Account("a1", Decimal(wallet), tuple(positions), mode)


def apply(
    before: Account, document: dict[str, Any], marks: Mapping[str, Decimal] = MARKS
) -> Account:
    """Parse ``document`` (account ``a1``) from JSON and apply it."""
    event = parse_event_json(json.dumps({"account_id": "a1", **document}))
    return apply_event(before, event, marks, TABLES)


def refusal(before: Account, document: dict[str, Any], marks: Mapping[str, Decimal] = MARKS) -> str:
    """The reason ``document`` is refused (parsing or rules)."""
    with pytest.raises(EventRejectedError) as caught:
        apply(before, document, marks)
    return caught.value.reason


# ------------------------------------------------------------------------------------ parsing


def test_numbers_parse_exactly_and_stream_fields_hold_the_json() -> None:
    """A JSON float becomes the exact decimal; the entry's one field is ``event``."""
    event = parse_event({b"event": b'{"type": "deposit", "account_id": "a1", "amount": 0.1}'})
    assert event == DepositEvent(type="deposit", account_id="a1", amount=Decimal("0.1"))


def test_position_change_defaults() -> None:
    """Side BOTH, realized PnL and fee 0, mode and leverage left to the account."""
    event = parse_event_json(
        '{"type": "position_change", "account_id": "a1", "event_id": "f-1", "event_time": 17,'
        ' "symbol": "BTCUSDT", "quantity": "0.1", "entry_price": "50000"}'
    )
    assert isinstance(event, PositionChangeEvent)
    assert (event.position_side, event.realized_pnl, event.fee) == (PositionSide.BOTH, ZERO, ZERO)
    assert (event.margin_mode, event.leverage, event.event_id) == (None, None, "f-1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "event: not valid JSON (Expecting property name enclosed in double quotes"),
        ("[1]", "event: must be a JSON object"),
        ('{"account_id": "a1"}', "type: required, one of deposit, withdraw,"),
        ('{"type": "transfer", "account_id": "a1"}', "type: unknown event type 'transfer'"),
        ('{"type": "deposit", "account_id": "a1", "amount": -5}', "amount: must be positive"),
        ('{"type": "deposit", "account_id": "a1", "amount": NaN}', "event: NaN is not a valid"),
        ('{"type": "deposit", "account_id": "a1", "amount": "x"}', "amount: not a decimal"),
        ('{"type": "deposit", "account_id": "a1"}', "amount: Field required"),
        ('{"type": "deposit", "amount": 1}', "account_id: Field required"),
        ('{"type": "deposit", "account_id": "a1", "amount": 1, "memo": 2}', "memo: Extra inputs"),
        (
            '{"type": "leverage_change", "account_id": "a1", "symbol": "BTCUSDT", "leverage": 0}',
            "leverage: Input should be greater than or equal to 1",
        ),
        (
            '{"type": "position_change", "account_id": "a1", "symbol": "BTCUSDT", "quantity": 1}',
            "entry_price: required unless quantity is 0",
        ),
        (
            '{"type": "position_change", "account_id": "a1", "symbol": "BTCUSDT",'
            ' "position_side": "LONG", "quantity": -1, "entry_price": 1}',
            "quantity: a LONG leg's quantity must not be negative",
        ),
        (
            '{"type": "position_change", "account_id": "a1", "symbol": "BTCUSDT", "quantity": 1,'
            ' "entry_price": 1, "margin_mode": "cross", "isolated_wallet": 5}',
            "isolated_wallet: only an isolated position has one",
        ),
        (
            '{"type": "isolated_margin", "account_id": "a1", "symbol": "BTCUSDT", "amount": 0}',
            "amount: must not be zero",
        ),
        (
            '{"type": "funding_fee", "account_id": "a1", "symbol": "btc", "amount": 1}',
            "symbol: String should match pattern",
        ),
    ],
)
def test_malformed_events_name_the_field(text: str, expected: str) -> None:
    """Every malformed event is refused with one line naming the field."""
    with pytest.raises(EventRejectedError) as caught:
        parse_event_json(text)
    assert caught.value.reason.startswith(expected)
    assert "\n" not in caught.value.reason


def test_stream_entry_needs_exactly_the_event_field() -> None:
    """An entry without ``event``, or with other fields, is refused."""
    with pytest.raises(EventRejectedError, match=r"^event: missing"):
        parse_event({b"payload": b"{}"})
    with pytest.raises(EventRejectedError, match=r"^source: unexpected stream field"):
        parse_event({"event": "{}", "source": "core"})


def test_unknown_account_and_wrong_account_are_refused() -> None:
    """Events apply only to an existing account, and only to their own."""
    with pytest.raises(EventRejectedError, match=r"^account_id: unknown account$"):
        require_account(None)
    event = parse_event_json('{"type": "deposit", "account_id": "b2", "amount": 1}')
    with pytest.raises(EventRejectedError, match=r"^account_id: event for b2 applied to a1$"):
        apply_event(account(), event, MARKS, TABLES)


# ----------------------------------------------------------------------- deposit and withdraw


def test_deposit_adds_to_the_cross_wallet() -> None:
    """``cw += amount``."""
    after = apply(account("1000"), {"type": "deposit", "amount": "250.75"})
    assert after.cross_wallet_balance == Decimal("1000") + Decimal("250.75")


def test_withdraw_up_to_the_available_balance() -> None:
    """available = cw + UPNL − IM: 1000.5 + 0.1 × (48000 − 50000) − 0.1 × 48000 / 10."""
    before = account("1000.5", cross("0.1", "50000", leverage=10))
    available = Decimal("1000.5") + Decimal("0.1") * (48000 - 50000) - Decimal("0.1") * 48000 / 10
    assert available == Decimal("320.5")
    after = apply(before, {"type": "withdraw", "amount": "320.5"})
    assert after.cross_wallet_balance == Decimal("1000.5") - Decimal("320.5")
    assert after.positions == before.positions
    message = refusal(before, {"type": "withdraw", "amount": 500})
    assert message == "amount: withdrawal of 500 exceeds the available 320.5"


def test_withdraw_cannot_take_profit_beyond_the_wallet() -> None:
    """Available is capped at the wallet: min(1000, 1000 + 0.1 × 12000 − 6000 × 0.1 / 20)."""
    before = account("1000", cross("0.1", "50000"))
    marks = {"BTCUSDT": Decimal("62000")}
    message = refusal(before, {"type": "withdraw", "amount": "1000.01"}, marks)
    assert message == "amount: withdrawal of 1000.01 exceeds the available 1000"


def test_withdraw_ignores_isolated_positions_and_needs_cross_marks() -> None:
    """Isolated wallets are not available; a cross position without a mark blocks."""
    before = account("100", isolated("0.1", "50000", "500"))
    message = refusal(before, {"type": "withdraw", "amount": "100.5"})
    assert message == "amount: withdrawal of 100.5 exceeds the available 100"
    message = refusal(account("100", cross("0.1", "50000")), {"type": "withdraw", "amount": 1}, {})
    assert message == "amount: no mark price for BTCUSDT to value the open cross position"


# ---------------------------------------------------------------------------- position change


def fill(quantity: str, entry: str | None = "50000", **extra: Any) -> dict[str, Any]:
    """A ``position_change`` on BTCUSDT."""
    document: dict[str, Any] = {"type": "position_change", "symbol": "BTCUSDT"}
    document["quantity"] = quantity
    if entry is not None:
        document["entry_price"] = entry
    return {**document, **extra}


def test_open_cross_position_charges_the_fee_to_the_cross_wallet() -> None:
    """A new cross position; ``cw −= fee``; leverage from the event."""
    after = apply(account("1000"), fill("0.1", fee="2.5", leverage=50))
    assert after.positions == (cross("0.1", "50000", leverage=50),)
    assert after.cross_wallet_balance == Decimal("1000") - Decimal("2.5")


def test_new_position_defaults_to_cross_and_20x() -> None:
    """Without mode and leverage: cross, 20x (Binance's default)."""
    after = apply(account("1000"), fill("-0.1"))
    assert after.positions == (cross("-0.1", "50000", leverage=20),)


def test_grow_and_reduce_a_cross_position() -> None:
    """Size and entry are set; realized PnL − fee go to the cross wallet."""
    grown = apply(account("1000", cross("0.1", "50000")), fill("0.3", "50500", fee=5))
    assert grown.positions == (cross("0.3", "50500"),)
    assert grown.cross_wallet_balance == Decimal("1000") - Decimal("5")
    reduced = apply(grown, fill("0.05", "50500", realized_pnl="100", fee="1.2"))
    assert reduced.positions == (cross("0.05", "50500"),)
    assert reduced.cross_wallet_balance == Decimal("995") + Decimal("100") - Decimal("1.2")


def test_close_a_cross_position() -> None:
    """Quantity 0 removes it; its realized PnL − fee settle in the cross wallet."""
    before = account("1000", cross("0.1", "50000"), isolated("1", "2500", "300", symbol="ETHUSDT"))
    after = apply(before, fill("0", None, realized_pnl="-150", fee=3))
    assert after.positions == (before.positions[1],)
    assert after.cross_wallet_balance == Decimal("1000") + Decimal("-150") - Decimal("3")


def test_open_isolated_position_moves_its_margin_out_of_the_cross_wallet() -> None:
    """``cw −= isolated_wallet``; the fee is paid from the isolated wallet."""
    event = fill("0.1", margin_mode="isolated", leverage=10, isolated_wallet="600", fee=2)
    after = apply(account("1000"), event)
    assert after.positions == (isolated("0.1", "50000", str(Decimal("600") - Decimal("2"))),)
    assert after.cross_wallet_balance == Decimal("1000") - Decimal("600")


def test_open_isolated_position_defaults_to_its_initial_margin() -> None:
    """Without ``isolated_wallet``: ``|Q| × EP / L`` = 0.2 × 50000 / 25 moves."""
    after = apply(account("1000"), fill("-0.2", margin_mode="isolated", leverage=25))
    margin = Decimal("0.2") * Decimal("50000") / 25
    assert after.positions == (isolated("-0.2", "50000", str(margin), leverage=25),)
    assert after.cross_wallet_balance == Decimal("1000") - margin


def test_isolated_realized_pnl_goes_to_its_wallet() -> None:
    """Reducing an isolated position: ``iw += realized_pnl − fee``, ``cw`` unchanged."""
    before = account("1000", isolated("0.2", "50000", "500"))
    after = apply(before, fill("0.1", realized_pnl="80", fee=1))
    wallet = Decimal("500") + Decimal("80") - Decimal("1")
    assert after.positions == (isolated("0.1", "50000", str(wallet)),)
    assert after.cross_wallet_balance == Decimal("1000")


def test_closing_isolated_returns_its_wallet_to_cross() -> None:
    """The remaining isolated wallet (after PnL and fee) moves back to ``cw``."""
    before = account("1000", isolated("0.2", "50000", "500"))
    after = apply(before, fill("0", None, realized_pnl="-120", fee="1.5"))
    assert after.positions == ()
    assert after.cross_wallet_balance == Decimal("1000") + (
        Decimal("500") - Decimal("120") - Decimal("1.5")
    )


def test_closing_isolated_at_a_deficit_returns_nothing() -> None:
    """A loss beyond the isolated wallet is the insurance fund's, not the cross wallet's."""
    before = account("1000", isolated("0.2", "50000", "100"))
    after = apply(before, fill("0", None, realized_pnl="-150"))
    assert after.cross_wallet_balance == Decimal("1000")


def test_new_hedge_leg_takes_the_other_legs_mode_and_leverage() -> None:
    """A SHORT leg next to an isolated 10x LONG: isolated, 10x, margin 0.05 × 51000 / 10."""
    long_leg = isolated("0.1", "50000", "500", side=PositionSide.LONG)
    before = account("1000", long_leg, hedge=True)
    after = apply(before, fill("-0.05", "51000", position_side="SHORT"))
    margin = Decimal("0.05") * Decimal("51000") / 10
    short_leg = isolated("-0.05", "51000", str(margin), side=PositionSide.SHORT)
    assert after.positions == (long_leg, short_leg)
    assert after.cross_wallet_balance == Decimal("1000") - margin


def test_reducing_fill_is_accepted_above_the_tier() -> None:
    """Binance always lets a position shrink, even when its leverage exceeds the tier."""
    before = account("100000", cross("30", "50000", leverage=100))
    after = apply(before, fill("20", realized_pnl="0"))
    assert after.positions == (cross("20", "50000", leverage=100),)


@pytest.mark.parametrize(
    ("before", "document", "expected"),
    [
        (
            account("1000000"),
            fill("30", leverage=100),
            "leverage: 100x exceeds the 75x maximum of the BTCUSDT tier holding notional 1440000",
        ),
        (
            account("1000000", cross("10", "50000", leverage=100)),
            fill("-20"),
            "leverage: 100x exceeds the 75x maximum of the BTCUSDT tier holding notional 960000",
        ),
        (
            account("1000", cross("0.1", "50000")),
            fill("0.2", margin_mode="isolated"),
            "margin_mode: BTCUSDT is held in cross mode "
            "(margin_mode_change once no position is open)",
        ),
        (
            account("1000", cross("0.1", "50000")),
            fill("0.2", leverage=10),
            "leverage: BTCUSDT is held at 20x (change it with leverage_change)",
        ),
        (
            account("1000", isolated("0.1", "50000", "500")),
            fill("0.2", isolated_wallet=100),
            "isolated_wallet: only when opening a position (move margin with isolated_margin)",
        ),
        (
            account("1000"),
            fill("0.1", isolated_wallet=100),
            "isolated_wallet: only an isolated position has one",
        ),
        (
            account("1000"),
            fill("0.1", margin_mode="isolated", isolated_wallet="1200"),
            "isolated_wallet: moving 1200 into the new isolated position "
            "exceeds the cross wallet 1000",
        ),
        (
            account("1000", isolated("0.2", "50000", "50")),
            fill("0.1", realized_pnl="-60"),
            "realized_pnl: the isolated wallet of BTCUSDT BOTH would go negative (50 + -60)",
        ),
        (account("1000"), fill("0", None), "quantity: no open BTCUSDT BOTH position to close"),
        (
            account("1000", hedge=True),
            fill("0.1"),
            "position_side: a hedge account holds LONG or SHORT positions",
        ),
        (
            account("1000"),
            {**fill("0.1"), "symbol": "DOGEUSDT"},
            "symbol: no brackets for DOGEUSDT",
        ),
    ],
)
def test_position_change_refusals(before: Account, document: dict[str, Any], expected: str) -> None:
    """Each Binance rule on fills refuses with a message naming the field."""
    assert refusal(before, document) == expected


def test_tier_is_taken_at_entry_without_a_mark() -> None:
    """No mark: the notional is ``|Q| × EP`` = 30 × 50000."""
    message = refusal(account("1000000"), fill("30", leverage=100), marks={})
    assert message == (
        "leverage: 100x exceeds the 75x maximum of the BTCUSDT tier holding notional 1500000"
    )


# --------------------------------------------------------------------------- isolated margin


def margin(amount: str, symbol: str = "ETHUSDT") -> dict[str, Any]:
    """An ``isolated_margin`` event."""
    return {"type": "isolated_margin", "symbol": symbol, "amount": amount}


ETH_SHORT = isolated("-1", "2500", "300", symbol="ETHUSDT")


def test_add_isolated_margin_moves_it_from_cross() -> None:
    """``cw −= amount``, ``iw += amount``."""
    after = apply(account("1000", ETH_SHORT), margin("200"))
    assert after.cross_wallet_balance == Decimal("1000") - Decimal("200")
    assert after.positions[0].isolated_wallet == Decimal("300") + Decimal("200")


def test_add_isolated_margin_is_limited_by_the_cross_available() -> None:
    """Available: 1000.5 − 0.1 × 2000 − 0.1 × 48000 / 10 = 320.5."""
    before = account("1000.5", cross("0.1", "50000", leverage=10), ETH_SHORT)
    assert refusal(before, margin("500")) == "amount: adding 500 exceeds the available 320.5"


def test_remove_isolated_margin_down_to_its_initial_margin() -> None:
    """Removable: min(300, 300 + (−1) × (2400 − 2500) − 1 × 2400 / 10) = 160."""
    upnl = Decimal("-1") * (Decimal("2400") - Decimal("2500"))
    removable = min(Decimal("300"), Decimal("300") + upnl - Decimal("2400") / 10)
    assert removable == 160
    after = apply(account("1000", ETH_SHORT), margin("-160"))
    assert after.positions[0].isolated_wallet == Decimal("300") - Decimal("160")
    assert after.cross_wallet_balance == Decimal("1000") + Decimal("160")
    assert refusal(account("1000", ETH_SHORT), margin("-160.01")) == (
        "amount: removing 160.01 exceeds the removable 160 of the isolated ETHUSDT BOTH position"
    )


def test_isolated_margin_refusals() -> None:
    """Only an open isolated position; removal needs its mark."""
    message = refusal(account("1000", cross("0.1", "50000")), margin("10", "BTCUSDT"))
    assert message == "symbol: no open isolated BTCUSDT BOTH position"
    message = refusal(account("1000", ETH_SHORT), margin("-10"), marks={})
    assert message == "symbol: no mark price for ETHUSDT"


# ------------------------------------------------------------------------- leverage and mode


def leverage(value: int) -> dict[str, Any]:
    """A BTCUSDT ``leverage_change``."""
    return {"type": "leverage_change", "symbol": "BTCUSDT", "leverage": value}


def test_leverage_change_sets_every_leg() -> None:
    """Both hedge legs take the new leverage (notional 0.1 × 48000 is in the 125x tier)."""
    long_leg = replace(cross("0.1", "50000", leverage=10), position_side=PositionSide.LONG)
    short_leg = replace(cross("-0.2", "51000", leverage=10), position_side=PositionSide.SHORT)
    after = apply(account("1000", long_leg, short_leg, hedge=True), leverage(125))
    assert [p.leverage for p in after.positions] == [125, 125]


def test_leverage_change_refused_above_the_tier() -> None:
    """30 × 48000 = 1440000 is in the 75x tier."""
    before = account("100000", cross("30", "50000", leverage=20))
    assert refusal(before, leverage(100)) == (
        "leverage: 100x exceeds the 75x maximum of the BTCUSDT tier holding notional 1440000"
    )


def test_leverage_change_without_a_position() -> None:
    """Checked against the first tier, then nothing to store."""
    assert apply(account("1000"), leverage(50)) == account("1000")
    assert refusal(account("1000"), leverage(150)) == (
        "leverage: 150x exceeds the 125x maximum of the BTCUSDT tier holding notional 0"
    )


def test_margin_mode_change_only_without_a_position() -> None:
    """Binance refuses a mode change while the symbol has an open position."""
    event = {"type": "margin_mode_change", "symbol": "BTCUSDT", "margin_mode": "isolated"}
    assert apply(account("1000"), event) == account("1000")
    assert refusal(account("1000", cross("0.1", "50000")), event) == (
        "margin_mode: cannot change the BTCUSDT margin mode while a position is open"
    )


# ------------------------------------------------------------------------------------ funding


def funding(amount: str, side: str | None = None) -> dict[str, Any]:
    """A BTCUSDT ``funding_fee``."""
    document = {"type": "funding_fee", "symbol": "BTCUSDT", "amount": amount}
    return document if side is None else {**document, "position_side": side}


def test_funding_of_a_cross_position_moves_the_cross_wallet() -> None:
    """``cw += amount`` (negative: paid)."""
    after = apply(account("1000", cross("0.1", "50000")), funding("-3.5"))
    assert after.cross_wallet_balance == Decimal("1000") + Decimal("-3.5")


def test_funding_of_an_isolated_position_moves_its_wallet() -> None:
    """``iw += amount``; ``cw`` unchanged."""
    after = apply(account("1000", isolated("0.1", "50000", "500")), funding("1.25"))
    assert after.positions[0].isolated_wallet == Decimal("500") + Decimal("1.25")
    assert after.cross_wallet_balance == Decimal("1000")


def test_funding_picks_the_isolated_hedge_leg() -> None:
    """With both legs isolated, ``position_side`` says which wallet moves."""
    long_leg = isolated("0.1", "50000", "500", side=PositionSide.LONG)
    short_leg = isolated("-0.1", "50000", "400", side=PositionSide.SHORT)
    before = account("1000", long_leg, short_leg, hedge=True)
    after = apply(before, funding("-2", "SHORT"))
    assert after.positions[1].isolated_wallet == Decimal("400") + Decimal("-2")
    assert after.positions[0] == long_leg
    assert refusal(before, funding("-2")) == (
        "position_side: required: both BTCUSDT legs are isolated (LONG or SHORT)"
    )


def test_funding_refusals() -> None:
    """Funding needs an open position and may not overdraw an isolated wallet."""
    assert refusal(account("1000"), funding("1")) == "symbol: no open BTCUSDT position to fund"
    assert refusal(account("1000", isolated("0.1", "50000", "1")), funding("-2")) == (
        "amount: the isolated wallet of BTCUSDT BOTH would go negative (1 + -2)"
    )

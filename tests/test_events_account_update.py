"""Binance ACCOUNT_UPDATE (reference §4.2) mirrored onto an account: ORDER and FUNDING_FEE."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from marginwatch.engine.types import Account, MarginMode, Position, PositionMode, PositionSide
from marginwatch.events.account_update import AccountUpdatePayload, apply_account_update
from marginwatch.events.models import AccountUpdateEvent, EventRejectedError
from marginwatch.events.models import parse_event_json as parse
from marginwatch.events.rules import apply_event
from tests.tables import BTC_2024

TABLES = {"BTCUSDT": BTC_2024}

# The example of Binance's "Event: Balance and Position Update" page (a hedge-mode account).
DOCS_EXAMPLE: dict[str, Any] = {
    "e": "ACCOUNT_UPDATE",
    "E": 1564745798939,
    "T": 1564745798938,
    "a": {
        "m": "ORDER",
        "B": [
            {"a": "USDT", "wb": "122624.12345678", "cw": "100.12345678", "bc": "50.12345678"},
            {"a": "BUSD", "wb": "1.00000000", "cw": "0.00000000", "bc": "-49.12345678"},
        ],
        "P": [
            {"s": "BTCUSDT", "pa": "0", "ep": "0.00000", "bep": "0", "cr": "200", "up": "0",
             "mt": "isolated", "iw": "0.00000000", "ps": "BOTH"},
            {"s": "BTCUSDT", "pa": "20", "ep": "6563.66500", "bep": "0", "cr": "0",
             "up": "2850.21200", "mt": "isolated", "iw": "13200.70726908", "ps": "LONG"},
            {"s": "BTCUSDT", "pa": "-10", "ep": "6563.86000", "bep": "6563.6",
             "cr": "-45.04000000", "up": "-1423.15600", "mt": "isolated",
             "iw": "6570.42511771", "ps": "SHORT"},
        ],
    },
}  # fmt: skip


def mirrored(before: Account, payload: dict[str, Any]) -> Account:
    """Apply ``payload`` as an ``account_update`` event of ``a1`` (parsed from JSON)."""
    document = {"type": "account_update", "account_id": "a1", "payload": payload}
    return apply_event(before, parse(json.dumps(document)), {}, TABLES)


def refusal(before: Account, payload: dict[str, Any]) -> str:
    """Why the update is refused."""
    with pytest.raises(EventRejectedError) as caught:
        mirrored(before, payload)
    return caught.value.reason


def update(reason: str, balances: list[Any], positions: list[Any] | None = None) -> Any:
    """An ACCOUNT_UPDATE with ``a.m``, ``a.B`` and (if given) ``a.P``."""
    data: dict[str, Any] = {"m": reason, "B": balances}
    if positions is not None:
        data["P"] = positions
    return {"e": "ACCOUNT_UPDATE", "E": 1, "T": 1, "a": data}


def usdt(cross_wallet: str) -> dict[str, str]:
    """The USDT balance entry."""
    return {"a": "USDT", "wb": cross_wallet, "cw": cross_wallet, "bc": "0"}


ISOLATED = Position(
    "BTCUSDT",
    Decimal("0.1"),
    Decimal("50000"),
    10,
    MarginMode.ISOLATED,
    isolated_wallet=Decimal(500),
)
CROSS_ETH = Position("ETHUSDT", Decimal("-2"), Decimal("2500"), 20, MarginMode.CROSS)


def leg(side: PositionSide, quantity: str, entry: str, wallet: str) -> Position:
    """An isolated 20x BTCUSDT hedge leg."""
    return Position(
        "BTCUSDT", Decimal(quantity), Decimal(entry), 20, MarginMode.ISOLATED, side, Decimal(wallet)
    )


def one_way(wallet: str, *positions: Position) -> Account:
    """One-way account ``a1``."""
    return Account("a1", Decimal(wallet), positions)


def test_docs_example_on_a_hedge_account() -> None:
    """Cross wallet from USDT ``cw``; LONG grown, SHORT opened with the LONG leg's leverage."""
    long_leg = leg(PositionSide.LONG, "10", "6500", "6000")
    before = Account("a1", Decimal("5000"), (long_leg,), PositionMode.HEDGE)
    after = mirrored(before, DOCS_EXAMPLE)
    assert after.cross_wallet_balance == Decimal("100.12345678")
    assert after.positions == (
        leg(PositionSide.LONG, "20", "6563.665", "13200.70726908"),
        leg(PositionSide.SHORT, "-10", "6563.86", "6570.42511771"),
    )


def test_order_update_opens_and_closes_on_a_one_way_account() -> None:
    """``pa`` 0 closes ETHUSDT; a new cross BTCUSDT takes 20x; absent positions are kept."""
    before = one_way("1000", CROSS_ETH, ISOLATED)
    positions = [
        {"s": "ETHUSDT", "pa": "0", "ep": "0", "mt": "cross", "iw": "0", "ps": "BOTH"},
        {
            "s": "BTCUSDT",
            "pa": "0.3",
            "ep": "50200",
            "mt": "isolated",
            "iw": "1450.5",
            "ps": "BOTH",
        },
        {"s": "SOLUSDT", "pa": "-4", "ep": "150.25", "mt": "cross", "iw": "0", "ps": "BOTH"},
    ]
    after = mirrored(before, update("ORDER", [usdt("1012.5")], positions))
    assert after.cross_wallet_balance == Decimal("1012.5")
    assert after.positions == (
        replace(
            ISOLATED,
            quantity=Decimal("0.3"),
            entry_price=Decimal("50200"),
            isolated_wallet=Decimal("1450.5"),
        ),
        Position("SOLUSDT", Decimal("-4"), Decimal("150.25"), 20, MarginMode.CROSS),
    )


def test_funding_fee_of_a_cross_position_sends_only_the_balance() -> None:
    """Abbreviated: only ``B``; the cross wallet is set, positions untouched."""
    before = one_way("1000", CROSS_ETH, ISOLATED)
    after = mirrored(before, update("FUNDING_FEE", [usdt("999.25")]))
    assert after.cross_wallet_balance == Decimal("999.25")
    assert after.positions == before.positions


def test_funding_fee_of_an_isolated_position_sends_that_position() -> None:
    """Abbreviated: ``B`` plus the one isolated position, whose ``iw`` is set."""
    before = one_way("1000", CROSS_ETH, ISOLATED)
    entry = {"s": "BTCUSDT", "pa": "0.1", "ep": "50000", "cr": "0", "up": "-10", "mt": "isolated",
             "iw": "499.5", "ps": "BOTH"}  # fmt: skip
    after = mirrored(before, update("FUNDING_FEE", [usdt("1000")], [entry]))
    assert after.positions == (CROSS_ETH, replace(ISOLATED, isolated_wallet=Decimal("499.5")))
    assert after.cross_wallet_balance == Decimal("1000")


def test_absent_fields_keep_the_held_values() -> None:
    """A ``P`` entry with only ``s`` and ``iw`` changes only the isolated wallet."""
    before = one_way("1000", ISOLATED)
    after = mirrored(before, update("FUNDING_FEE", [], [{"s": "BTCUSDT", "iw": "498.75"}]))
    assert after.positions[0].isolated_wallet == Decimal("498.75")
    assert after.positions[0].quantity == Decimal("0.1")
    assert after.cross_wallet_balance == Decimal("1000")


def test_margin_call_spelling_of_the_margin_type_is_accepted() -> None:
    """``CROSSED`` reads as cross."""
    entry = {"s": "ETHUSDT", "pa": "1", "ep": "2500", "mt": "CROSSED", "ps": "BOTH"}
    after = mirrored(one_way("1000"), update("ORDER", [], [entry]))
    assert after.positions == (
        Position("ETHUSDT", Decimal(1), Decimal(2500), 20, MarginMode.CROSS),
    )


def test_apply_account_update_directly() -> None:
    """The pure translation, without the event envelope."""
    payload = AccountUpdatePayload.model_validate(update("DEPOSIT", [usdt("1500")]))
    assert apply_account_update(one_way("1000"), payload).cross_wallet_balance == 1500


@pytest.mark.parametrize(
    ("before", "payload", "expected"),
    [
        (
            one_way("1000"),
            update("ORDER", [], [{"s": "BTCUSDT", "pa": "1", "ep": "1", "ps": "LONG"}]),
            "payload.a.P[0].ps: a one_way account holds BOTH positions",
        ),
        (
            one_way("1000"),
            update("ORDER", [], [{"s": "BTCUSDT", "pa": "1", "ep": "0", "mt": "cross"}]),
            "payload.a.P[0].ep: required (positive) for an open position",
        ),
        (
            one_way("1000"),
            update("ORDER", [], [{"s": "BTCUSDT", "iw": "1"}]),
            "payload.a.P[0].pa: required: no BTCUSDT BOTH is held",
        ),
        (
            one_way("1000"),
            update("ORDER", [], [{"s": "BTCUSDT", "pa": "1", "ep": "5", "mt": "isolated"}]),
            "payload.a.P[0].iw: required for an isolated position",
        ),
        (
            one_way("1000"),
            update("ORDER", [], [{"s": "BTCUSDT", "pa": "abc"}]),
            "payload.a.P[0].pa: not a decimal number: 'abc'",
        ),
        (
            one_way("1000"),
            {**update("ORDER", []), "e": "MARGIN_CALL"},
            "payload.e: Input should be 'ACCOUNT_UPDATE'",
        ),
        (one_way("1000"), {"e": "ACCOUNT_UPDATE"}, "payload.a: Field required"),
    ],
)
def test_refusals_name_the_payload_field(
    before: Account, payload: dict[str, Any], expected: str
) -> None:
    """Malformed or inconsistent updates are refused, naming the field inside ``payload``."""
    assert refusal(before, payload) == expected


def test_event_model() -> None:
    """The event carries the payload model, account id alongside."""
    event = parse(
        json.dumps({"type": "account_update", "account_id": "a1", "payload": DOCS_EXAMPLE})
    )
    assert isinstance(event, AccountUpdateEvent)
    assert event.payload.data.reason == "ORDER"
    assert event.payload.data.positions[1].isolated_wallet == Decimal("13200.70726908")

"""Snapshot validation: every rejection names the field."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from marginwatch.base.snapshot import SnapshotError, parse_snapshot

GOOD: dict[str, Any] = {
    "mark_prices": {"BTCUSDT": "50000", "ETHUSDT": 2500.5},
    "accounts": [
        {
            "account_id": "a1",
            "cross_wallet_balance": "1000",
            "positions": [
                {
                    "symbol": "BTCUSDT",
                    "quantity": "0.1",
                    "entry_price": "49000",
                    "leverage": 20,
                    "margin_mode": "cross",
                },
                {
                    "symbol": "ETHUSDT",
                    "quantity": -2,
                    "entry_price": 2600,
                    "leverage": 10,
                    "margin_mode": "isolated",
                    "isolated_wallet": "520.5",
                },
            ],
        }
    ],
}


def rejected(mutate: Any) -> str:
    """The one-line message for GOOD after ``mutate``."""
    document = copy.deepcopy(GOOD)
    mutate(document)
    with pytest.raises(SnapshotError) as caught:
        parse_snapshot(json.dumps(document))
    message = str(caught.value)
    assert "\n" not in message
    return message


def position(document: dict[str, Any], k: int = 0) -> dict[str, Any]:
    """The k-th position of the first account."""
    return document["accounts"][0]["positions"][k]  # type: ignore[no-any-return]


def test_good_snapshot_parses_numbers_exactly() -> None:
    """JSON numbers and strings both become exact decimals."""
    snapshot = parse_snapshot(json.dumps(GOOD))
    assert snapshot.mark_prices["ETHUSDT"] == Decimal("2500.5")
    (account,) = snapshot.accounts
    assert account.positions[1].isolated_wallet == Decimal("520.5")
    assert account.positions[1].quantity == -2


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["mark_prices"].update(BTCUSDT="-1"), "mark_prices.BTCUSDT: must be positive"),
        (lambda d: d["mark_prices"].update(BTCUSDT="NaN"), "mark_prices.BTCUSDT: must be finite"),
        (lambda d: d["mark_prices"].update(BTCUSDT="abc"), "mark_prices.BTCUSDT: not a decimal"),
        (lambda d: d["mark_prices"].update(BTCUSDT=True), "mark_prices.BTCUSDT: must be a number"),
        (
            lambda d: position(d).update(quantity="0"),
            "accounts[0].positions[0].quantity: must not be zero",
        ),
        (
            lambda d: position(d).update(position_side="LONG", quantity="-1"),
            "accounts[0].positions[0].quantity: a LONG leg's quantity must be positive",
        ),
        (
            lambda d: position(d).update(leverage=0),
            "accounts[0].positions[0].leverage: Input should be greater than or equal to 1",
        ),
        (
            lambda d: position(d).update(leverage=126),
            "accounts[0].positions[0].leverage: 126x exceeds the 125x maximum",
        ),
        (
            lambda d: position(d, 1).pop("isolated_wallet"),
            "accounts[0].positions[1].isolated_wallet: required for an isolated position",
        ),
        (
            lambda d: position(d).update(isolated_wallet="5"),
            "accounts[0].positions[0].isolated_wallet: only an isolated position has one",
        ),
        (
            lambda d: position(d).update(symbol="FOOUSDT"),
            "accounts[0].positions[0].symbol: no mark price for FOOUSDT",
        ),
        (
            lambda d: position(d).update(position_side="LONG"),
            "accounts[0].positions[0].position_side: a one_way account holds BOTH positions",
        ),
        (
            lambda d: d["accounts"][0].update(position_mode="hedge"),
            "accounts[0].positions[0].position_side: a hedge account holds LONG or SHORT",
        ),
        (
            lambda d: position(d).update(entry_price="0"),
            "accounts[0].positions[0].entry_price: must be positive",
        ),
        (
            lambda d: position(d).update(margin_mode="portfolio"),
            "accounts[0].positions[0].margin_mode: Input should be 'cross' or 'isolated'",
        ),
        (
            lambda d: d["accounts"][0].pop("cross_wallet_balance"),
            "accounts[0].cross_wallet_balance: Field required",
        ),
        (lambda d: d.update(extra=1), "extra: Extra inputs are not permitted"),
    ],
)
def test_rejections_name_the_field(mutate: Any, expected: str) -> None:
    """The message starts with the field's path."""
    assert rejected(mutate).startswith(expected)


def test_duplicate_position_is_rejected() -> None:
    """Two BOTH positions on one symbol cannot coexist."""
    message = rejected(lambda d: d["accounts"][0]["positions"].append(dict(position(d))))
    assert message.startswith("accounts[0].positions[2]: duplicates positions[0]")


def test_symbol_without_brackets_is_rejected() -> None:
    """A symbol with a mark but neither shipped nor given brackets is named."""

    def mutate(document: dict[str, Any]) -> None:
        document["mark_prices"]["NEWUSDT"] = "1"
        position(document).update(symbol="NEWUSDT")

    assert rejected(mutate) == "accounts[0].positions[0].symbol: no brackets for NEWUSDT"


def test_snapshot_brackets_override_and_are_checked() -> None:
    """Brackets in the snapshot replace the shipped table, and a gap in them is rejected."""
    tiers = [
        {
            "notional_floor": 0,
            "notional_cap": 1000,
            "max_leverage": 20,
            "maintenance_margin_rate": "0.01",
            "maintenance_amount": 0,
        },
        {
            "notional_floor": 2000,
            "notional_cap": 10**9,
            "max_leverage": 10,
            "maintenance_margin_rate": "0.02",
            "maintenance_amount": 10,
        },
    ]
    message = rejected(lambda d: d.update(brackets={"BTCUSDT": tiers}))
    assert message.startswith("brackets.BTCUSDT[1].notional_floor: tiers must be ascending")


def test_invalid_json_is_one_line() -> None:
    """Broken JSON is reported as such."""
    with pytest.raises(SnapshotError, match="snapshot: not valid JSON"):
        parse_snapshot("{")


def test_json_nan_literal_is_rejected() -> None:
    """Python's json accepts NaN; the snapshot does not."""
    with pytest.raises(SnapshotError, match="NaN is not a valid number"):
        parse_snapshot('{"mark_prices": {"BTCUSDT": NaN}, "accounts": []}')

"""Accounts as JSON Lines: each line validated on its own, rejections named by line and field,
numbers exact, good lines stored as the snapshot contract's JSON."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from marginwatch.base.account_lines import (
    AccountLineError,
    RejectedLine,
    account_state,
    chunked,
    parse_account_chunk,
    parse_account_line,
)
from marginwatch.base.snapshot import AccountModel, decimal_json
from marginwatch.state.accounts import account_from_json, account_to_json

SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
ACCOUNT: dict[str, Any] = {
    "account_id": "a1",
    "cross_wallet_balance": "1000",
    "positions": [
        {"symbol": "BTCUSDT", "quantity": "0.1", "entry_price": "49000", "leverage": 20,
         "margin_mode": "cross"},
        {"symbol": "ETHUSDT", "quantity": "-2", "entry_price": "2600", "leverage": 10,
         "margin_mode": "isolated", "isolated_wallet": "520.5"},
    ],
}  # fmt: skip


def line(**changes: Any) -> str:
    """ACCOUNT as one JSON line, with top-level ``changes``."""
    return json.dumps(ACCOUNT | changes)


def with_position(k: int, **changes: Any) -> str:
    """ACCOUNT as one JSON line, its k-th position changed."""
    positions = [dict(p) for p in ACCOUNT["positions"]]
    positions[k] |= changes
    return line(positions=positions)


def test_a_good_line_is_stored_as_the_contract_s_json() -> None:
    """The state is the canonical JSON ``account_to_json`` writes for the same account."""
    account_id, state = account_state(line(), SYMBOLS)
    assert account_id == "a1"
    expected = account_to_json(AccountModel.model_validate_json(line()).to_domain())
    assert state.decode() == expected
    assert account_from_json(state).positions[1].isolated_wallet == Decimal("520.5")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (with_position(0, quantity="0"), "positions[0].quantity: must not be zero"),
        (with_position(1, quantity=0), "positions[1].quantity: must not be zero"),
        (with_position(0, entry_price="-1"), "positions[0].entry_price: must be positive"),
        (with_position(1, isolated_wallet=None), "positions[1].isolated_wallet: required"),
        (with_position(0, symbol="FOOUSDT"), "positions[0].symbol: no brackets for FOOUSDT"),
        (with_position(0, leverage=0.5), "positions[0].leverage: Input should be a valid int"),
        (line(cross_wallet_balance="abc"), "cross_wallet_balance: not a decimal number"),
        (line(cross_wallet_balance=float("nan")), "account: NaN is not a valid number"),
        (line(extra=1), "extra: Extra inputs are not permitted"),
        ("{", "account: not valid JSON"),
        ("[1, 2]", "account: Input should be a valid dictionary"),
    ],
)
def test_a_bad_line_names_the_field(text: str, expected: str) -> None:
    """Rejections read as a snapshot's do, relative to the account."""
    with pytest.raises(AccountLineError) as caught:
        account_state(text, SYMBOLS)
    assert str(caught.value).startswith(expected), caught.value


@pytest.mark.parametrize(
    "number",
    ["12345678901234567890.123456789", "1.50", "1e-7", "-0.000000000000000000001", "7"],
)
def test_json_numbers_are_read_exactly(number: str) -> None:
    """A JSON number (not a string) keeps every digit, as in a snapshot."""
    text = line().replace('"1000"', number)
    parsed = parse_account_line(text)
    assert parsed.cross_wallet_balance == Decimal(number)
    assert str(parsed.cross_wallet_balance) == str(Decimal(number))


@pytest.mark.parametrize(
    "text",
    [
        line(),
        line(account_id="x: 1.5"),  # a value that looks like a number takes the exact route
        line(cross_wallet_balance=5),
        line(cross_wallet_balance=True),
        line(account_id=7),
        line(position_mode="hedge"),
        with_position(0, leverage="20"),
        with_position(0, leverage=True),
        with_position(0, quantity=" 0.1 "),
        '{"account_id": "a", "account_id": "b", "cross_wallet_balance": "1"}',
        '{"account_id": "\\u00e9t\\u00e9", "cross_wallet_balance": "1"}',
        '{"account_id": "a", "cross_wallet_balance": 10000000000000000000000000000001}',
    ],
)
def test_both_routes_read_a_line_alike(text: str) -> None:
    """Validated straight from the text or through ``decimal_json``: the same account, or both
    refused."""
    exact: AccountModel | None
    try:
        exact = AccountModel.model_validate(decimal_json(text, "account"))
    except ValueError:
        exact = None
    try:
        direct: AccountModel | None = parse_account_line(text)
    except AccountLineError:
        direct = None
    assert direct == exact


def test_a_chunk_keeps_the_good_lines_and_names_the_bad_ones() -> None:
    """Line numbers count every line, blank ones included; blank lines are skipped."""
    lines = [line(account_id="a"), "\n", with_position(0, quantity="0"), "  ", line(account_id="b")]
    chunk = parse_account_chunk(enumerate(lines, start=41), SYMBOLS)
    assert [account_id for account_id, _ in chunk.states] == ["a", "b"]
    assert [str(rejected) for rejected in chunk.rejected] == [
        "line 43: positions[0].quantity: must not be zero (a closed position is left out)"
    ]
    assert chunk.rejected == [RejectedLine(43, chunk.rejected[0].reason)]


def test_bytes_lines_read_like_text_lines() -> None:
    """A file's lines arrive as bytes, stdin's may be text."""
    text = line().replace('"1000"', "1000.25")
    assert parse_account_line(text.encode()) == parse_account_line(text)


def test_chunked_reads_as_needed() -> None:
    """Chunks of the given size, the last one shorter, from any iterator."""
    assert list(chunked(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []

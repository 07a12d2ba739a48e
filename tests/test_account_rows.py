"""Stored accounts read straight into column rows: the fast reader agrees with the model."""

from __future__ import annotations

import json
from decimal import Decimal

import redis
from hypothesis import HealthCheck, given, settings

from marginwatch.base import keys
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.state.account_rows import AccountRows, add_account, domain_rows, read_account_rows
from marginwatch.state.accounts import account_to_json, store_accounts
from marginwatch.state.bad_records import BadRecords
from tests.strategies import ALL_SYMBOLS, market_and_account

D = Decimal
INDEX = {symbol: number for number, symbol in enumerate(ALL_SYMBOLS)}
BTC = Position("BTCUSDT", D("0.5"), D(50_000), 20, MarginMode.CROSS)


def rows_of(account_id: str, state: bytes, bad: BadRecords | None = None) -> AccountRows:
    found = AccountRows()
    add_account(found, account_id, b"3", state, INDEX, bad)
    return found


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(market_and_account())
def test_the_fast_reader_gives_the_rows_the_model_gives(case):
    """Any stored account: the same wallet and rows as from the domain account."""
    _market, account = case
    found = rows_of(account.account_id, account_to_json(account).encode())
    wallet, rows = domain_rows(0, account, INDEX)
    assert (found.account_ids, found.versions) == ([account.account_id], [3])
    assert (found.cross_wallet, found.rows) == ([wallet], rows)


def test_a_state_the_fast_reader_cannot_take_goes_through_the_model() -> None:
    """Numbers written as JSON numbers: the model reads them, the rows are the same."""
    account = Account("a", D(100), (BTC,))
    data = json.loads(account_to_json(account))
    data["cross_wallet_balance"] = 100
    found = rows_of("a", json.dumps(data).encode())
    assert (found.cross_wallet, found.rows) == ([100.0], domain_rows(0, account, INDEX)[1])


def test_corrupt_states_are_left_out_and_reported() -> None:
    """Not JSON, another account's state, an unknown symbol: no rows, each reported."""
    bad = BadRecords()
    unknown = Account("c", D(1), (Position("NOSUCHUSDT", D(1), D(1), 1, MarginMode.CROSS),))
    for account_id, state in [
        ("a", b"{corrupt"),
        ("b", account_to_json(Account("other", D(1), (BTC,))).encode()),
        ("c", account_to_json(unknown).encode()),
    ]:
        assert len(rows_of(account_id, state, bad)) == 0
    assert bad.counts == {"account": 3}


def test_accounts_are_read_with_their_versions_absent_ones_left_out(
    redis_client: redis.Redis,
) -> None:
    """Stored twice and once; one never stored: two accounts, versions 2 and 1, in order."""
    store_accounts(redis_client, [Account("x", D(5), (BTC,)), Account("y", D(7))], partitions=1)
    store_accounts(redis_client, [Account("x", D(6), (BTC,))], partitions=1)
    found = read_account_rows(redis_client, 0, ["y", "missing", "x"], INDEX)
    assert (found.account_ids, found.versions, found.cross_wallet) == (["y", "x"], [1, 2], [7, 6])
    assert found.rows == [(1, False, INDEX["BTCUSDT"], 0.5, 50_000.0, 0.0, 0)]
    assert redis_client.exists(keys.account(0, "x"))

"""The live book read for a stress run, from a real Redis: every partition's accounts as rows
with their states, each partition as of one moment, and the fund from the ledgers."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from marginwatch.base.partitions import partition_of
from marginwatch.base.settings import ConfigurationError
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.state.account_rows import domain_rows
from marginwatch.state.accounts import PartitionCountMismatchError, store_accounts
from marginwatch.state.fund import credit_ledger
from marginwatch.state.live_book import (
    begin_read,
    catch_up,
    check_partition_count,
    read_live_book,
    read_states,
)

D = Decimal
PARTITIONS = 4
INDEX = {symbol: number for number, symbol in enumerate(sorted(default_tables()))}


def account(account_id: str, wallet: int, quantity: str = "0.1") -> Account:
    btc = Position("BTCUSDT", D(quantity), D(50_000), 10, MarginMode.CROSS)
    eth = Position("ETHUSDT", D(-1), D(3_000), 5, MarginMode.ISOLATED, isolated_wallet=D(700))
    return Account(account_id, D(wallet), (btc, eth))


ACCOUNTS = [account(f"acct-{n}", 1_000 + n) for n in range(12)]


def test_the_live_book_is_what_was_stored_with_the_ledgers_summed(
    redis_client: redis.Redis,
) -> None:
    """Every partition's accounts (ids sorted within a partition), each row as the fast reader
    gives it, each state the stored account; the fund 250 + (−40) + 1,000.5 = 1,210.5."""
    store_accounts(redis_client, ACCOUNTS, PARTITIONS)
    for partition, amount in [(0, "250"), (1, "-40"), (3, "1000.5")]:
        credit_ledger(redis_client, partition, D(amount))
    seen: list[int] = []
    book = read_live_book(redis_client, PARTITIONS, INDEX, seen.append)
    assert seen == [0, 1, 2, 3]
    by_id = {a.account_id: a for a in ACCOUNTS}
    order = sorted(by_id, key=lambda i: (partition_of(i, PARTITIONS), i))
    assert book.account_ids == order
    assert [book.account(n) for n in range(len(order))] == [by_id[i] for i in order]
    assert len(book.parts) == PARTITIONS
    expected = [row for n, i in enumerate(order) for row in domain_rows(n, by_id[i], INDEX)[1]]
    columns = book.columns()
    found = zip(columns.account.tolist(), columns.isolated.tolist(), columns.symbol.tolist(),
                columns.quantity.tolist(), columns.entry_price.tolist(),
                columns.isolated_wallet.tolist(), strict=True)  # fmt: skip
    assert list(found) == [row[:6] for row in expected]
    assert columns.cross_wallet.tolist() == [float(by_id[i].cross_wallet_balance) for i in order]
    assert book.fund == D("1210.5")


def test_accounts_changed_during_the_read_are_read_again(redis_client: redis.Redis) -> None:
    """Changes between the chunked read and the catch-up (an account's new wallet, a new
    account, a liquidation's ledger credit) are in the partition's read: it is the partition as
    of the catch-up's transaction."""
    store_accounts(redis_client, ACCOUNTS, PARTITIONS)
    partition = partition_of("acct-0", PARTITIONS)
    after, members = begin_read(redis_client, partition)
    states = read_states(redis_client, partition, members)
    newcomer = next(
        f"new-{n}" for n in range(100) if partition_of(f"new-{n}", PARTITIONS) == partition
    )
    store_accounts(redis_client, [account("acct-0", 7), account(newcomer, 5)], PARTITIONS)
    credit_ledger(redis_client, partition, D(99))
    ledger = catch_up(redis_client, partition, after, states)
    assert ledger == D(99)
    assert set(states) == {*members, newcomer}
    assert b'"cross_wallet_balance":"7"' in states["acct-0"][1]
    assert states["acct-0"][0] == b"2"  # the version of the second write


def test_a_read_is_refused_with_another_partition_count(redis_client: redis.Redis) -> None:
    """Nothing stored yet, or stored with 4 partitions and read with 8: refused, never
    recorded."""
    with pytest.raises(ConfigurationError, match="is not set"):
        check_partition_count(redis_client, PARTITIONS)
    store_accounts(redis_client, ACCOUNTS[:1], PARTITIONS)
    with pytest.raises(PartitionCountMismatchError, match="has 4 partitions"):
        check_partition_count(redis_client, 8)
    check_partition_count(redis_client, PARTITIONS)

"""The pipeline benchmark: the market and the book."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import redis

from benchmarks.pipeline.observe import used_memory
from marginwatch.base.partitions import partition_of
from marginwatch.base.ticks import Tick
from marginwatch.cli.book_generator import generate_accounts
from marginwatch.engine.brackets import BracketTable
from marginwatch.engine.types import Account, PositionMode
from marginwatch.producer.publisher import Publisher
from marginwatch.producer.run import synthetic_symbols
from marginwatch.producer.synthetic import MarketSpec, start_prices, to_significant_digits
from marginwatch.state.accounts import store_accounts


def pick_symbols(count: int, tables: Mapping[str, BracketTable]) -> tuple[str, ...]:
    """The symbols the producer would pick for ``--symbols count`` from ``tables`` (majors
    first)."""
    return synthetic_symbols(count, set(tables), ())


def start_marks(symbols: Sequence[str], seed: int) -> dict[str, Decimal]:
    """The synthetic market's start prices, drawn exactly as the producer draws them."""
    prices = start_prices(symbols, np.random.default_rng(seed))
    digits = MarketSpec(tuple(symbols)).significant_digits
    return {
        s: to_significant_digits(float(p), digits) for s, p in zip(symbols, prices, strict=True)
    }


def publish_marks(client: redis.Redis, marks: Mapping[str, Decimal]) -> None:
    """One round of ticks at the start prices, one second old (the producer's are newer)."""
    event_time = time.time_ns() // 1_000_000 - 1_000
    Publisher(client).publish([Tick(s, price, event_time) for s, price in marks.items()])


@dataclass
class TopUp:
    """Generated accounts, topped up to ``target`` positions per account on average.

    An account whose running total falls short of the target gets the positions (on symbols it
    does not hold) and the cross wallet of a second generated account of the same mode.
    """

    target: float
    generated_positions: int = 0
    merged_accounts: int = 0
    positions: int = 0

    def accounts(self, count: int, marks: Mapping[str, Decimal], seed: int) -> Iterator[Account]:
        donors = generate_accounts(sys.maxsize, marks, seed + 1, prefix="donor")
        for number, generated in enumerate(generate_accounts(count, marks, seed)):
            self.generated_positions += len(generated.positions)
            account = generated
            if self.positions + len(generated.positions) < self.target * (number + 1):
                account = merged(generated, next_donor(donors, generated.position_mode))
                self.merged_accounts += 1
            self.positions += len(account.positions)
            yield account


def next_donor(donors: Iterator[Account], mode: PositionMode) -> Account:
    return next(donor for donor in donors if donor.position_mode is mode)


def merged(account: Account, donor: Account) -> Account:
    held = {position.symbol for position in account.positions}
    extra = tuple(position for position in donor.positions if position.symbol not in held)
    wallet = account.cross_wallet_balance + donor.cross_wallet_balance
    return Account(account.account_id, wallet, account.positions + extra, account.position_mode)


@dataclass
class Book:
    """What was loaded, where it went, and how long it took."""

    accounts: int
    positions: int
    generated_positions: int
    merged_accounts: int
    partition_accounts: list[int]
    partition_positions: list[int]
    holders: dict[str, list[str]]
    store_seconds: float  # generated and stored in one streaming pass
    redis_used_bytes: int
    empty_worker_kib: int = 0  # RSS of a worker over empty partitions


def load_book(
    client: redis.Redis,
    args: argparse.Namespace,
    marks: Mapping[str, Decimal],
    primaries: Sequence[str],
) -> Book:
    """Generate and store the book in one streaming pass (timed together: no account is held
    after its chunk is stored); the symbols' holders are kept only for the naive baseline."""
    started = time.perf_counter()
    top_up = TopUp(args.positions_per_account)
    book = Book(0, 0, 0, 0, [0] * args.partitions, [0] * args.partitions, {}, 0.0, 0)
    tallied = tally(book, top_up.accounts(args.accounts, marks, args.seed), args)
    book.accounts = store_accounts(client, tallied, args.partitions)
    book.store_seconds = time.perf_counter() - started
    book.positions, book.generated_positions = top_up.positions, top_up.generated_positions
    book.merged_accounts = top_up.merged_accounts
    book.redis_used_bytes = used_memory(primaries)
    return book


def tally(book: Book, accounts: Iterator[Account], args: argparse.Namespace) -> Iterator[Account]:
    """Pass the accounts on, counting them by partition (and noting holders, if wanted)."""
    keep_holders = args.naive_seconds > 0
    for account in accounts:
        partition = partition_of(account.account_id, args.partitions)
        book.partition_accounts[partition] += 1
        book.partition_positions[partition] += len(account.positions)
        if keep_holders:
            for symbol in {position.symbol for position in account.positions}:
                book.holders.setdefault(symbol, []).append(account.account_id)
        yield account

"""Partition evaluation: batch screening, exact confirmation, one action per transition."""

from __future__ import annotations

import itertools
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.actions import Action, ActionKind
from marginwatch.base.settings import Settings
from marginwatch.base.ticks import Tick
from marginwatch.engine import batch
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.types import Account, MarginMode, Position
from marginwatch.executor.liquidation import execute_liquidation
from marginwatch.executor.margin_calls import execute_margin_calls, execute_resolution
from marginwatch.producer.publisher import Publisher
from marginwatch.state.accounts import store_accounts
from marginwatch.worker.evaluation import (
    evaluate_partition,
    finish_evaluation,
    reconcile_episodes,
    reconfirm_settled_liquidations,
    record_due,
    select_candidates,
)
from marginwatch.worker.partition import (
    CODES_LOOKED_UP_ONE_BY_ONE,
    FULL_PASS_INTERVAL_SECONDS,
    PartitionBook,
)

D = Decimal
SETTINGS = Settings(redis_url="unused", partitions=1)
TABLES = dict(default_tables())
# Cross long 1 BTC from 50,000 with 1,265 in the wallet: MM = P × 0.4%, MB = 1,265 + P − 50,000.
ACCOUNT = Account("E", D(1265), (Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS),))
EVENT_TIMES = itertools.count(1_700_000_000_000, 100)


MARGIN_CALL, LIQUIDATION = ActionKind.MARGIN_CALL, ActionKind.LIQUIDATION
RESOLVED = ActionKind.MARGIN_CALL_RESOLVED


@pytest.fixture
def book(redis_client: redis.Redis) -> PartitionBook:
    """Partition 0 of a one-partition deployment holding ACCOUNT, loaded."""
    store_accounts(redis_client, [ACCOUNT], partitions=1)
    tables = dict(default_tables())
    loaded = PartitionBook(0, batch.BracketArrays.from_tables(tables, sorted(tables)), tables)
    loaded.load(redis_client)
    return loaded


def at_price(client: redis.Redis, book: PartitionBook, price: str) -> list[ActionKind]:
    """Publish a BTCUSDT mark, evaluate the partition, return the kinds of the actions due."""
    return [action.kind for action in evaluate_at(client, book, price)]


def test_margin_call_once_per_episode_with_hysteresis(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """Enter at 0.8, stay quiet above 0.75, resolve below 0.75, then a new episode."""
    assert at_price(redis_client, book, "49000") == []  # 196 / 265 = 0.7396: warning
    assert at_price(redis_client, book, "48950") == [MARGIN_CALL]  # 195.8 / 215 = 0.911
    assert at_price(redis_client, book, "48989.5") == []  # 195.958 / 254.5 = 0.77
    assert at_price(redis_client, book, "48950") == []  # same episode
    assert at_price(redis_client, book, "49000") == [RESOLVED]  # 0.7396 < 0.75
    assert at_price(redis_client, book, "48950") == [MARGIN_CALL]  # a new episode


def test_liquidation_is_sent_once_per_version(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """MB = 1,265 − 1,300 < 0: margin call and liquidation, once, until the account changes."""
    assert at_price(redis_client, book, "48700") == [MARGIN_CALL, LIQUIDATION]
    assert at_price(redis_client, book, "48690") == []
    store_accounts(redis_client, [ACCOUNT], partitions=1)  # version 2, same state
    assert at_price(redis_client, book, "48680") == [LIQUIDATION]


def test_action_names_pool_version_and_triggering_tick(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """The action says which pool, at which version, and which tick triggered it."""
    Publisher(redis_client).publish([Tick("BTCUSDT", D("48950"), 1_700_000_100_000)])
    (action,) = evaluate_partition(book, redis_client, SETTINGS).actions
    assert action.kind == MARGIN_CALL
    assert action.account_id == "E"
    assert action.pool == "cross"
    assert action.account_version == 1
    assert action.tick_event_time_ms == 1_700_000_100_000
    assert action.detected_ratio is not None
    exact = D(48_950) * D("0.004") / D(215)  # decided by the screen: within its bound
    assert abs(D(action.detected_ratio) - exact) <= D("1e-12") * exact


def test_refresh_reads_changed_accounts_only(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """A deposit (new version) is picked up; the unchanged book is not rebuilt."""
    assert book.refresh(redis_client) == 0
    richer = Account("E", D(20_000), ACCOUNT.positions)
    store_accounts(redis_client, [richer], partitions=1)
    assert book.refresh(redis_client) == 1
    assert book.version_of("E") == 2
    assert at_price(redis_client, book, "48700") == []  # rescued by the deposit


def test_episode_survives_a_change_of_layout(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """A new isolated position moves the rows; the cross pool keeps its episode."""
    assert at_price(redis_client, book, "48950") == [MARGIN_CALL]
    eth = Position("ETHUSDT", D(-1), D(2500), 10, MarginMode.ISOLATED, isolated_wallet=D(300))
    Publisher(redis_client).publish([Tick("ETHUSDT", D(2500), next(EVENT_TIMES))])
    store_accounts(redis_client, [Account("E", D(965), (*ACCOUNT.positions, eth))], partitions=1)
    # MB = 965 − 1,050 < 0 now: the cross pool liquidates, but no second margin call.
    assert at_price(redis_client, book, "48950") == [LIQUIDATION]
    keys_now = sorted(book.pool_key(pool) for pool in range(book.book.pools))
    assert keys_now == [("E", "cross"), ("E", "isolated:ETHUSDT:BOTH")]


def execute(client: redis.Redis, actions: list[Action]) -> list[str]:
    """Run the actions as the executor does; their outcomes."""
    outcomes = []
    calls = [a for a in actions if a.kind is MARGIN_CALL]
    outcomes += execute_margin_calls(client, TABLES, SETTINGS, calls)
    for action in actions:
        if action.kind is RESOLVED:
            outcomes.append(execute_resolution(client, TABLES, SETTINGS, action))
        elif action.kind is LIQUIDATION:
            outcomes.append(execute_liquidation(client, TABLES, SETTINGS, action))
    return outcomes


def evaluate_at(
    client: redis.Redis, book: PartitionBook, price: str, *, sent: bool = True
) -> list[Action]:
    """Publish a BTCUSDT mark, evaluate; with ``sent``, finish as after sending the actions."""
    Publisher(client).publish([Tick("BTCUSDT", D(price), next(EVENT_TIMES))])
    outcome = evaluate_partition(book, client, SETTINGS)
    if sent:
        record_due(client, book, outcome)
        finish_evaluation(client, book, outcome)
    return outcome.actions


def test_actions_that_were_not_sent_are_due_again(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """Sending failed (the evaluation ended before ``finish_evaluation``): the retry finds the
    same margin call and liquidation due; once sent, they are not due again."""
    due = [a.kind for a in evaluate_at(redis_client, book, "48700", sent=False)]
    assert due == [MARGIN_CALL, LIQUIDATION]
    assert [a.kind for a in evaluate_at(redis_client, book, "48700")] == due
    assert evaluate_at(redis_client, book, "48700") == []


def loaded(client: redis.Redis) -> PartitionBook:
    """A new book of partition 0, as a restarted worker loads it."""
    fresh = PartitionBook(0, batch.BracketArrays.from_tables(TABLES, sorted(TABLES)), TABLES)
    fresh.load(client)
    return fresh


def test_a_restarted_worker_knows_the_open_episodes(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """In an episode when the worker restarts: recovery is resolved, the next dip called."""
    assert execute(redis_client, evaluate_at(redis_client, book, "48950")) == ["sent"]
    restarted = loaded(redis_client)
    resolution = evaluate_at(redis_client, restarted, "49000")  # 0.7396: below 0.75
    assert [a.kind for a in resolution] == [RESOLVED]
    assert execute(redis_client, resolution) == ["sent"]
    again = evaluate_at(redis_client, loaded(redis_client), "48950")
    assert [a.kind for a in again] == [MARGIN_CALL]
    assert execute(redis_client, again) == ["sent"]


def test_an_episode_ends_when_its_pool_is_liquidated(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """Liquidated in its episode; the account's next position gets its own margin call."""
    actions = evaluate_at(redis_client, book, "48700")  # MB 1,265 − 1,300 < 0
    assert execute(redis_client, actions) == ["sent", "liquidated"]
    assert not redis_client.exists(keys.episode(0, "E", "cross"))
    assert redis_client.smembers(keys.partition_episodes(0)) == set()
    store_accounts(redis_client, [ACCOUNT], partitions=1)  # a new position, as a fill opens it
    fresh = loaded(redis_client)
    assert execute(redis_client, evaluate_at(redis_client, fresh, "48950")) == ["sent"]


def test_bad_records_in_redis_are_skipped_and_counted(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """A malformed tick and a corrupt account hash: skipped and counted, the others evaluated."""
    redis_client.hset(keys.PRICES, "XRPUSDT", "{not a tick")
    redis_client.hset(keys.PRICES, "ETHUSDT", Tick("BTCUSDT", D(1), 1, 1).to_json())  # wrong one
    redis_client.hset(keys.account(0, "Z"), mapping={"version": 1, "state": "{corrupt"})
    redis_client.sadd(keys.partition_members(0), "Z")
    restarted = loaded(redis_client)
    assert [a.kind for a in evaluate_at(redis_client, restarted, "48950")] == [MARGIN_CALL]
    assert restarted.bad.counts == {"tick": 2, "account": 1}
    assert restarted.ids == ["E"]
    assert evaluate_at(redis_client, restarted, "48940") == []
    assert restarted.bad.counts == {"tick": 2, "account": 1}  # each bad tick read once


def test_pools_the_batch_marks_uncertain_are_confirmed(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """A quiet pool (ok, already confirmed) that the float screen marks uncertain is still a
    candidate for the exact path."""
    assert at_price(redis_client, book, "52000") == []
    batch.evaluate_ratios(book.book, book.brackets, book.brackets.marks_array(
        {"BTCUSDT": D(52000)}), SETTINGS.thresholds, book.result)  # fmt: skip
    assert select_candidates(book, SETTINGS).tolist() == []
    book.result.uncertain[0] = True
    assert select_candidates(book, SETTINGS).tolist() == [0]


def test_a_worker_behind_a_trimmed_change_stream_reloads(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """The change stream was trimmed past what the book read: the deposit whose notice was
    trimmed away is picked up all the same (every account read again)."""
    store_accounts(redis_client, [Account("E", D(20_000), ACCOUNT.positions)], partitions=1)
    for filler in range(5):
        redis_client.xadd(keys.partition_changes(0), {"account": f"x{filler}", "version": 1})
    redis_client.xtrim(keys.partition_changes(0), maxlen=2, approximate=False)
    assert at_price(redis_client, book, "48700") == []  # rescued by the deposit
    assert book.version_of("E") == 2


def test_a_sent_liquidation_is_due_until_executed(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """The worker records the pool as due (since the evaluation started) with its progress;
    the executor's liquidation removes it; a second sending keeps the first time."""
    actions = evaluate_at(redis_client, book, "48700")
    due = keys.due_liquidations(0)
    ((member, since),) = redis_client.zrange(due, 0, -1, withscores=True)
    assert member == b"E|cross"
    assert since > 1_700_000_000_000
    assert execute(redis_client, actions) == ["sent", "liquidated"]
    assert redis_client.zcard(due) == 0


def test_a_skipped_liquidation_is_sent_again_while_the_pool_stays_bankrupt(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """Sent at 48,700; the mark bounced to 49,500 when the executor re-checked (rescued, the
    liquidation no longer due); back at 48,700 the worker sends it again."""
    sent = evaluate_at(redis_client, book, "48700")
    assert [a.kind for a in sent] == [MARGIN_CALL, LIQUIDATION]
    Publisher(redis_client).publish([Tick("BTCUSDT", D(49500), next(EVENT_TIMES))])
    assert execute(redis_client, [a for a in sent if a.kind is LIQUIDATION]) == ["skipped"]
    assert evaluate_at(redis_client, book, "48700") == []  # remembered as sent
    assert reconfirm_settled_liquidations(redis_client, book) == 1
    assert [a.kind for a in evaluate_at(redis_client, book, "48700")] == [LIQUIDATION]
    assert reconfirm_settled_liquidations(redis_client, book) == 0  # due again: left alone


def test_a_margin_call_the_executor_declined_is_sent_again(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """Sent at 48,950; the executor saw 49,500 (not confirmed, no episode in Redis); the
    worker, which remembered an episode, takes the flag from Redis (not while the margin call
    may be in flight, right after deciding) and calls the next dip."""
    sent = evaluate_at(redis_client, book, "48950")
    Publisher(redis_client).publish([Tick("BTCUSDT", D(49500), next(EVENT_TIMES))])
    assert execute(redis_client, sent) == ["not_confirmed"]
    assert evaluate_at(redis_client, book, "48950") == []  # believes it is in an episode
    assert reconcile_episodes(redis_client, book) == 0  # decided just now: maybe in flight
    assert reconcile_episodes(redis_client, book) == 1
    again = evaluate_at(redis_client, book, "48950")
    assert [a.kind for a in again] == [MARGIN_CALL]
    assert execute(redis_client, again) == ["sent"]
    assert reconcile_episodes(redis_client, book) == 0


def test_an_evaluation_moves_only_the_pools_of_the_symbols_that_ticked(
    redis_client: redis.Redis,
) -> None:
    """After the first (full) pass, a BTC tick evaluates E's cross pool only, an ETH tick the
    two pools holding ETH, no tick none; past the interval, a full pass again."""
    eth_cross = Position("ETHUSDT", D(1), D(2500), 10, MarginMode.CROSS)
    eth_isolated = replace(eth_cross, margin_mode=MarginMode.ISOLATED, isolated_wallet=D(300))
    store_accounts(redis_client, [ACCOUNT, Account("F", D(1000), (eth_cross,)),
                                  Account("G", D(0), (eth_isolated,))], partitions=1)  # fmt: skip
    Publisher(redis_client).publish([Tick("ETHUSDT", D(2500), next(EVENT_TIMES))])
    book = loaded(redis_client)
    assert evaluated(redis_client, book, "BTCUSDT", "52000") == (None, 4)  # G: 2 pools
    assert evaluated(redis_client, book, "BTCUSDT", "51000") == ([0], 1)
    assert evaluated(redis_client, book, "ETHUSDT", "2400") == ([1, 3], 2)
    assert evaluated(redis_client, book, "ETHUSDT", "2400") == ([], 0)  # the same mark
    book.full_pass_at -= FULL_PASS_INTERVAL_SECONDS
    assert evaluated(redis_client, book, "ETHUSDT", "2400") == (None, 4)


def evaluated(
    client: redis.Redis, book: PartitionBook, symbol: str, price: str
) -> tuple[list[int] | None, int]:
    """Publish a mark, evaluate and finish: the pools evaluated (``None``: all) and how many."""
    Publisher(client).publish([Tick(symbol, D(price), next(EVENT_TIMES))])
    outcome = evaluate_partition(book, client, SETTINGS)
    finish_evaluation(client, book, outcome)
    pools = None if outcome.evaluated is None else outcome.evaluated.tolist()
    return pools, outcome.pools


def test_the_pools_of_an_unsent_incremental_evaluation_are_evaluated_again(
    redis_client: redis.Redis, book: PartitionBook
) -> None:
    """After a full pass, a margin call found and not sent: the same mark again (nothing moved)
    finds it due again; once sent, not again."""
    assert at_price(redis_client, book, "52000") == []
    assert [a.kind for a in evaluate_at(redis_client, book, "48950", sent=False)] == [MARGIN_CALL]
    assert at_price(redis_client, book, "48950") == [MARGIN_CALL]
    assert at_price(redis_client, book, "48950") == []


def test_uncertain_pools_are_decided_exactly_on_the_account_in_redis(
    redis_client: redis.Redis,
) -> None:
    """At MR = 1 exactly (MM = MB = 195.8 at 48,950) the screen is not sure, so the pool is
    decided on its account as Redis holds it now: gone there, nothing is decided; stored
    again, margin call and liquidation. A pool the screen is sure of is decided on the book."""
    on_the_line = Account("U", D("1245.8"), ACCOUNT.positions)  # MB = 1,245.8 + 48,950 − 50,000
    store_accounts(redis_client, [ACCOUNT, on_the_line], partitions=1)
    book = loaded(redis_client)
    assert at_price(redis_client, book, "52000") == []
    redis_client.delete(keys.account(0, "U"), keys.account(0, "E"))
    actions = evaluate_at(redis_client, book, "48950", sent=False)
    assert [(a.account_id, a.kind) for a in actions] == [("E", MARGIN_CALL)]  # E: MR 0.91
    assert book.result.uncertain.tolist() == [False, True]
    store_accounts(redis_client, [on_the_line], partitions=1)
    actions = evaluate_at(redis_client, book, "48950")
    assert [(a.account_id, a.kind) for a in actions] == [
        ("E", MARGIN_CALL), ("U", MARGIN_CALL), ("U", LIQUIDATION)
    ]  # fmt: skip


def test_a_change_that_keeps_the_shape_is_written_in_place(redis_client: redis.Redis) -> None:
    """A deposit, then the liquidation closing the position: the same layout, the pool empty
    and never acted on again; a position on a new symbol lays the book out again, without
    the closed row. (Nine safe accounts keep the closed rows within their 10% share.)"""
    safe = [Account(f"safe{n}", D(10**6), ACCOUNT.positions) for n in range(9)]
    store_accounts(redis_client, [ACCOUNT, *safe], partitions=1)
    book = loaded(redis_client)
    laid_out = book.book
    store_accounts(redis_client, [Account("E", D(1300), ACCOUNT.positions)], partitions=1)
    assert at_price(redis_client, book, "48900") == [MARGIN_CALL]  # 195.6 / 200 = 0.978
    assert book.book is laid_out
    actions = evaluate_at(redis_client, book, "48800")  # MB 100 < MM 195.2
    assert [a.kind for a in actions] == [LIQUIDATION]
    assert execute(redis_client, actions) == ["liquidated"]
    assert evaluate_at(redis_client, book, "48700") == []
    assert book.book is laid_out
    row = book.book.pool_starts[book.cross_pools[book.numbers["E"]]]
    assert (book.book.quantity[row], book.closed_rows) == (0.0, 1)
    assert book.result.status.tolist() == [0] * 10
    eth = Position("ETHUSDT", D(1), D(2500), 10, MarginMode.CROSS)
    store_accounts(redis_client, [Account("E", D(500), (eth,))], partitions=1)
    Publisher(redis_client).publish([Tick("ETHUSDT", D(2500), next(EVENT_TIMES))])
    assert evaluate_at(redis_client, book, "48600") == []
    assert book.book is not laid_out
    assert (book.book.positions, book.closed_rows) == (10, 0)
    assert book.pool_key(
        int(book.symbol_pools.pools_of(np.array([book.brackets.index["ETHUSDT"]]))[0])
    ) == ("E", "cross")


def test_pools_are_found_by_code_one_by_one_or_all_at_once(redis_client: redis.Redis) -> None:
    """A few codes looked up account by account, and many with one isin, mark the same pools;
    codes of no pool of the book, and None, mark nothing."""
    eth = Position("ETHUSDT", D(1), D(2500), 10, MarginMode.ISOLATED, isolated_wallet=D(300))
    store_accounts(redis_client, [Account(f"a{n}", D(100), (*ACCOUNT.positions, eth))
                                  for n in range(3)], partitions=1)  # fmt: skip
    book = loaded(redis_client)
    wanted = [int(book.pool_codes[1]), int(book.pool_codes[4]), 10**12, None]
    few = book.pools_mask(wanted)
    many = book.pools_mask(wanted * (CODES_LOOKED_UP_ONE_BY_ONE // 2))
    assert few.tolist() == many.tolist() == [False, True, False, False, True, False]

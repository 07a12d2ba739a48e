"""The action message: one type, a schema version, errors that name the field."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from marginwatch.base.actions import SCHEMA_VERSION, Action, ActionKind, ActionMessageError
from marginwatch.base.pools import (
    CROSS_POOL,
    in_pool,
    isolated_pool,
    margin_mode_of,
    pool_of,
    pool_symbols,
)
from marginwatch.engine.brackets import default_tables
from marginwatch.engine.exact import evaluate_account
from marginwatch.engine.types import (
    Account,
    MarginMode,
    Position,
    PositionMode,
    PositionSide,
    Thresholds,
)
from marginwatch.runtime.celery_app import (
    KIND_OF_TASK,
    TASK_OF_KIND,
    executor_queues,
    queue_of,
)

D = Decimal
ACTION = Action(ActionKind.LIQUIDATION, 5, "alice", "isolated:BTCUSDT:LONG", 7, 42,
                1_700_000_000_000, "1.0125")  # fmt: skip


def test_message_round_trips_through_json() -> None:
    """to_message, JSON, from_message: the same action, schema version included."""
    message = json.loads(json.dumps(ACTION.to_message()))
    assert message["schema"] == SCHEMA_VERSION
    assert message["kind"] == "liquidate"
    assert Action.from_message(message) == ACTION


def test_a_null_ratio_round_trips() -> None:
    """Margin balance <= 0 has no ratio: null on the wire, None in the action."""
    action = replace(ACTION, detected_ratio=None)
    assert Action.from_message(action.to_message()) == action


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schema": 2}, "schema"),
        ({"schema": None}, "schema"),
        ({"kind": "close_everything"}, "kind"),
        ({"account_id": ""}, "account_id"),
        ({"account_id": 5}, "account_id"),
        ({"pool": None}, "pool"),
        ({"partition": None}, "partition"),
        ({"partition": -1}, "partition"),
        ({"account_version": -1}, "account_version"),
        ({"account_version": True}, "account_version"),
        ({"account_version": "7"}, "account_version"),
        ({"tick_sequence": 1.5}, "tick_sequence"),
        ({"tick_event_time_ms": None}, "tick_event_time_ms"),
        ({"detected_ratio": 1.0125}, "detected_ratio"),
    ],
)
def test_a_bad_message_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    """Each wrong field is named first in the error."""
    message = {**ACTION.to_message(), **change}
    with pytest.raises(ActionMessageError, match=rf"^{field}: "):
        Action.from_message(message)


def test_a_message_that_is_not_an_object_is_refused() -> None:
    """A list (say, a margin-call batch sent to the wrong task) is not an action."""
    with pytest.raises(ActionMessageError, match=r"^message: expected an object, got list"):
        Action.from_message([ACTION.to_message()])


def test_every_kind_has_one_task_and_a_queue_of_its_partition() -> None:
    """Only the Celery layer maps kinds to tasks, one to one; margin calls and resolutions
    share the partition's margin-call queue, drained before its liquidations."""
    assert set(TASK_OF_KIND) == set(ActionKind)
    assert {KIND_OF_TASK[task] for task in TASK_OF_KIND.values()} == set(ActionKind)
    assert queue_of(ActionKind.MARGIN_CALL, 3) == "marginwatch.margin-calls.3"
    assert queue_of(ActionKind.MARGIN_CALL_RESOLVED, 3) == "marginwatch.margin-calls.3"
    assert queue_of(ActionKind.LIQUIDATION, 3) == "marginwatch.actions.3"
    assert executor_queues([2, 3]) == [
        "marginwatch.margin-calls.2", "marginwatch.margin-calls.3",
        "marginwatch.actions.2", "marginwatch.actions.3",
    ]  # fmt: skip


def test_pool_names_and_members() -> None:
    """A hedge account: the cross pool holds the cross legs; each isolated leg is its own pool."""
    long = Position("BTCUSDT", D(1), D(50_000), 20, MarginMode.CROSS, PositionSide.LONG)
    short = Position("BTCUSDT", D(-1), D(51_000), 20, MarginMode.ISOLATED, PositionSide.SHORT,
                     isolated_wallet=D(2_600))  # fmt: skip
    eth = Position("ETHUSDT", D(2), D(2_500), 10, MarginMode.CROSS, PositionSide.LONG)
    account = Account("h", D(10_000), (long, short, eth), PositionMode.HEDGE)
    assert isolated_pool(short) == "isolated:BTCUSDT:SHORT"
    assert [in_pool(p, CROSS_POOL) for p in account.positions] == [True, False, True]
    assert pool_symbols(account, CROSS_POOL) == ["BTCUSDT", "ETHUSDT"]
    assert pool_symbols(account, "isolated:BTCUSDT:SHORT") == ["BTCUSDT"]
    assert margin_mode_of(CROSS_POOL) is MarginMode.CROSS
    assert margin_mode_of("isolated:BTCUSDT:SHORT") is MarginMode.ISOLATED
    marks = {"BTCUSDT": D(50_500), "ETHUSDT": D(2_400)}
    report = evaluate_account(account, marks, dict(default_tables()), Thresholds())
    cross = pool_of(report, CROSS_POOL)
    isolated = pool_of(report, "isolated:BTCUSDT:SHORT")
    assert cross is not None
    assert isolated is not None
    assert cross[0] == report.cross
    assert [m.position for m in cross[1]] == [long, eth]
    assert isolated[0] == report.positions[1].pool
    assert pool_of(report, "isolated:BTCUSDT:LONG") is None

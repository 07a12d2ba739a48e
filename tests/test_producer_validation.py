"""Tick validation: every bad input is refused with a message naming the field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from marginwatch.base.ticks import Tick
from marginwatch.producer.ticks import RawTick
from marginwatch.producer.validation import TickValidationError, TickValidator

NOW_MS = 1_700_000_000_000
KNOWN = {"BTCUSDT", "ETHUSDT"}


def validator(max_jump_ratio: Decimal | None = None) -> TickValidator:
    """A validator with a fixed clock at ``NOW_MS``."""
    return TickValidator(KNOWN, max_jump_ratio, clock_ms=lambda: NOW_MS)


def rejection(checker: TickValidator, raw: RawTick) -> TickValidationError:
    """The rejection of ``raw`` (fails the test if it is accepted)."""
    with pytest.raises(TickValidationError) as caught:
        checker.validate(raw)
    return caught.value


def test_accepts_a_good_tick_with_decimal_price_text_kept() -> None:
    """A Binance-style price string becomes the same Decimal, digits and all."""
    tick = validator().validate(RawTick("BTCUSDT", "11794.15000000", NOW_MS))
    assert tick == Tick("BTCUSDT", Decimal("11794.15000000"), NOW_MS)
    assert str(tick.mark_price) == "11794.15000000"


def test_accepts_digits_for_event_time_and_floats_by_shortest_repr() -> None:
    """CSV gives event times as text; a float price is read by its shortest repr."""
    tick = validator().validate(RawTick("ETHUSDT", 0.1 + 0.2, str(NOW_MS)))
    assert tick.event_time_ms == NOW_MS
    assert str(tick.mark_price) == "0.30000000000000004"


@pytest.mark.parametrize(
    ("mark_price", "reason", "message"),
    [
        ("NaN", "not_finite", "mark_price: must be finite"),
        (float("nan"), "not_finite", "mark_price: must be finite"),
        ("inf", "not_finite", "mark_price: must be finite"),
        (float("-inf"), "not_finite", "mark_price: must be finite"),
        ("-1.5", "not_positive", "mark_price: must be positive"),
        ("0", "not_positive", "mark_price: must be positive"),
        (0, "not_positive", "mark_price: must be positive"),
        ("abc", "bad_mark_price", "mark_price: not a number: 'abc'"),
        (None, "bad_mark_price", "mark_price: must be a decimal number, got None"),
        (True, "bad_mark_price", "mark_price: must be a decimal number, got True"),
    ],
)
def test_bad_mark_prices_are_refused(mark_price: object, reason: str, message: str) -> None:
    """NaN, infinities, negatives, zero and non-numbers are refused with their message."""
    error = rejection(validator(), RawTick("BTCUSDT", mark_price, NOW_MS))
    assert (error.reason, str(error)) == (reason, message)


def test_unknown_symbol_is_refused() -> None:
    """A symbol outside the known set is refused, by name."""
    error = rejection(validator(), RawTick("FOOUSDT", "1", NOW_MS))
    assert (error.reason, str(error)) == ("unknown_symbol", "symbol: unknown symbol 'FOOUSDT'")


def test_non_string_symbol_is_refused() -> None:
    """A symbol that is not a string is refused."""
    error = rejection(validator(), RawTick(42, "1", NOW_MS))
    assert (error.reason, str(error)) == ("bad_symbol", "symbol: must be a string, got 42")


@pytest.mark.parametrize(
    ("event_time", "message"),
    [
        ("-5", "event_time: must be a whole number of milliseconds, got '-5'"),
        (-5, "event_time: must not be negative"),
        (1.5, "event_time: must be a whole number of milliseconds, got 1.5"),
        (None, "event_time: must be a whole number of milliseconds, got None"),
    ],
)
def test_bad_event_times_are_refused(event_time: object, message: str) -> None:
    """Event times must be whole, non-negative milliseconds."""
    error = rejection(validator(), RawTick("BTCUSDT", "1", event_time))
    assert (error.reason, str(error)) == ("bad_event_time", message)


def test_older_event_time_is_refused_and_equal_accepted() -> None:
    """A tick older than the last accepted for its symbol is refused; an equal time is not."""
    checker = validator()
    checker.validate(RawTick("BTCUSDT", "100", NOW_MS))
    error = rejection(checker, RawTick("BTCUSDT", "101", NOW_MS - 1))
    assert error.reason == "older_event_time"
    assert str(error) == (
        f"event_time: older than the last accepted for BTCUSDT ({NOW_MS - 1} < {NOW_MS})"
    )
    assert checker.validate(RawTick("BTCUSDT", "102", NOW_MS)).mark_price == Decimal("102")
    assert checker.validate(RawTick("ETHUSDT", "5", NOW_MS - 1)).symbol == "ETHUSDT"


def test_event_time_far_in_the_future_is_refused() -> None:
    """A tick more than five minutes ahead would block its symbol, so it is refused."""
    error = rejection(validator(), RawTick("BTCUSDT", "1", NOW_MS + 300_001))
    assert error.reason == "future_event_time"
    assert str(error) == "event_time: 300001 ms in the future (at most 300000)"


def test_jump_guard_refuses_a_single_bad_print() -> None:
    """Beyond max_jump_ratio a tick is refused; the next normal tick is measured as before."""
    checker = validator(Decimal("0.1"))
    checker.validate(RawTick("BTCUSDT", "100", NOW_MS))
    error = rejection(checker, RawTick("BTCUSDT", "111", NOW_MS + 1))
    assert error.reason == "jump"
    assert str(error) == (
        "mark_price: moves 11.00% from the last accepted 100 for BTCUSDT (max_jump_ratio 0.1)"
    )
    assert checker.validate(RawTick("BTCUSDT", "90", NOW_MS + 2)).mark_price == Decimal("90")
    assert rejection(checker, RawTick("BTCUSDT", "80.9", NOW_MS + 3)).reason == "jump"
    assert rejection(checker, RawTick("BTCUSDT", "1", NOW_MS + 4)).reason == "jump"


def test_jump_confirmed_by_the_next_tick_is_accepted() -> None:
    """A real crash costs one refused tick: the next tick near the new level is accepted."""
    checker = validator(Decimal("0.05"))
    checker.validate(RawTick("BTCUSDT", "100", NOW_MS))
    assert rejection(checker, RawTick("BTCUSDT", "88", NOW_MS + 1)).reason == "jump"
    assert checker.validate(RawTick("BTCUSDT", "87.5", NOW_MS + 2)).mark_price == Decimal("87.5")
    assert checker.validate(RawTick("BTCUSDT", "87", NOW_MS + 3)).mark_price == Decimal("87")


def test_rejected_tick_does_not_move_the_last_accepted() -> None:
    """After a refused tick, the next one is compared to the last accepted one."""
    checker = validator()
    checker.validate(RawTick("BTCUSDT", "100", NOW_MS))
    rejection(checker, RawTick("BTCUSDT", "-1", NOW_MS + 10))
    assert checker.last_accepted["BTCUSDT"] == Tick("BTCUSDT", Decimal("100"), NOW_MS)

"""Tick validation: every raw tick becomes a ``Tick`` or a ``TickValidationError`` naming the field.

Checks, in order: the symbol is a known one; the mark price is a finite, positive decimal; the
event time is whole milliseconds, not too far in the future and not older than the last tick
accepted for the symbol; optionally, the price moves at most ``max_jump_ratio`` from that tick.

The jump guard stops a single bad print, not a real move: a refused jump is accepted when the
next tick of the symbol confirms it (lies within ``max_jump_ratio`` of the refused price), so
a genuine crash costs one tick instead of freezing the symbol at its pre-crash price.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from decimal import Decimal, InvalidOperation

from marginwatch.base.ticks import Tick
from marginwatch.producer.ticks import RawTick, wall_clock_ms

DEFAULT_MAX_FUTURE_MS = 300_000


# Every reason code a tick can be rejected for (validation here; "malformed" from the sources;
# "stale" from the publisher's atomic check), so metrics can export each from the start.
REJECT_REASONS = (
    "malformed", "bad_symbol", "unknown_symbol", "bad_mark_price", "not_finite", "not_positive",
    "bad_event_time", "future_event_time", "older_event_time", "jump", "stale",
)  # fmt: skip


class TickValidationError(ValueError):
    """A tick that failed validation; ``reason`` is a short code for counting rejects."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TickValidator:
    """Validates raw ticks against the known symbols and the last tick accepted per symbol.

    A tick whose event time is more than ``max_future_ms`` ahead of ``clock_ms()`` is refused:
    accepted, it would make every later (correct) tick of its symbol look old.
    """

    def __init__(
        self,
        known_symbols: Collection[str],
        max_jump_ratio: Decimal | None = None,
        *,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.known_symbols = frozenset(known_symbols)
        self.max_jump_ratio = max_jump_ratio
        self.max_future_ms = max_future_ms
        self.clock_ms = clock_ms
        self.last_accepted: dict[str, Tick] = {}
        self.jump_candidates: dict[str, Tick] = {}

    def validate(self, raw: RawTick) -> Tick:
        """The tick, remembered as the last accepted of its symbol; else ``TickValidationError``."""
        symbol = self._symbol(raw.symbol)
        tick = Tick(
            symbol, parse_mark_price(raw.mark_price), parse_event_time_ms(raw.event_time_ms)
        )
        self._check_not_future(tick)
        last = self.last_accepted.get(symbol)
        if last is not None:
            check_not_older(tick, last)
            self._check_jump(tick, last)
        self.last_accepted[symbol] = tick
        return tick

    def _symbol(self, value: object) -> str:
        """The symbol, if it is a known one."""
        if not isinstance(value, str):
            raise TickValidationError("bad_symbol", f"symbol: must be a string, got {value!r}")
        if value not in self.known_symbols:
            raise TickValidationError("unknown_symbol", f"symbol: unknown symbol {value!r}")
        return value

    def _check_not_future(self, tick: Tick) -> None:
        """Refuse an event time more than ``max_future_ms`` ahead of the clock."""
        ahead_ms = tick.event_time_ms - self.clock_ms()
        if ahead_ms > self.max_future_ms:
            message = f"event_time: {ahead_ms} ms in the future (at most {self.max_future_ms})"
            raise TickValidationError("future_event_time", message)

    def _check_jump(self, tick: Tick, last: Tick) -> None:
        """Refuse a move beyond ``max_jump_ratio``, unless it confirms the refused tick before."""
        if self.max_jump_ratio is None or jump_ratio(tick, last) <= self.max_jump_ratio:
            self.jump_candidates.pop(tick.symbol, None)
            return
        candidate = self.jump_candidates.pop(tick.symbol, None)
        if candidate is not None and jump_ratio(tick, candidate) <= self.max_jump_ratio:
            return
        self.jump_candidates[tick.symbol] = tick
        message = (
            f"mark_price: moves {jump_ratio(tick, last):.2%} from the last accepted "
            f"{last.mark_price} for {tick.symbol} (max_jump_ratio {self.max_jump_ratio})"
        )
        raise TickValidationError("jump", message)


def jump_ratio(tick: Tick, reference: Tick) -> Decimal:
    """|p / reference − 1|: how far ``tick`` moved from ``reference``."""
    return abs(tick.mark_price / reference.mark_price - 1)


def parse_mark_price(value: object) -> Decimal:
    """A finite, positive decimal mark price, from a string, an int, a float or a Decimal."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise TickValidationError(
            "bad_mark_price", f"mark_price: must be a decimal number, got {value!r}"
        )
    try:
        mark_price = Decimal(str(value))
    except InvalidOperation:
        raise TickValidationError(
            "bad_mark_price", f"mark_price: not a number: {value!r}"
        ) from None
    if not mark_price.is_finite():
        raise TickValidationError("not_finite", "mark_price: must be finite")
    if mark_price <= 0:
        raise TickValidationError("not_positive", "mark_price: must be positive")
    return Decimal(format(mark_price, "f"))


def parse_event_time_ms(value: object) -> int:
    """A non-negative whole number of milliseconds since the epoch, from an int or digits."""
    if isinstance(value, str) and value.isascii() and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        message = f"event_time: must be a whole number of milliseconds, got {value!r}"
        raise TickValidationError("bad_event_time", message)
    if value < 0:
        raise TickValidationError("bad_event_time", "event_time: must not be negative")
    return value


def check_not_older(tick: Tick, last: Tick) -> None:
    """Refuse ``tick`` when its event time is older than ``last`` (equal times are accepted)."""
    if tick.event_time_ms < last.event_time_ms:
        message = (
            f"event_time: older than the last accepted for {tick.symbol} "
            f"({tick.event_time_ms} < {last.event_time_ms})"
        )
        raise TickValidationError("older_event_time", message)

"""Accounts as JSON Lines (input of ``marginwatch accounts load``): one account object a line,
each of the snapshot contract's ``accounts`` entries (``AccountModel``), validated a chunk at a
time so a file of any size is read with one chunk in memory.

Each line stands alone: a bad one is rejected naming its line number and field
(``line 17: positions[0].quantity: must not be zero``) and the others go on; blank lines are
skipped. A good line becomes its account id and its state in the contract's JSON (the validated
model's canonical dump, numbers as decimal strings), ready to store. Every symbol held must
have brackets; the tier of the leverage needs marks, which only a snapshot has.

Numbers stay exact: a line with a JSON number written with a fraction or an exponent is read
with ``decimal_json`` (no binary float); any other line, the usual one with decimal strings, is
validated straight from its text, which reads every value the same. A line the direct route
refuses goes the ``decimal_json`` route too, so its rejection reads as a snapshot's would.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

from pydantic import ValidationError

from marginwatch.base.snapshot import (
    AccountModel,
    FieldError,
    decimal_json,
    describe_validation_error,
)

# ``accounts load --format``: a snapshot (one JSON document) or JSON Lines, and the file names
# that mean JSON Lines when no format is given.
SNAPSHOT_FORMAT = "json"
LINES_FORMAT = "jsonl"
LOAD_FORMATS = (SNAPSHOT_FORMAT, LINES_FORMAT)
LINES_SUFFIXES = (".jsonl", ".ndjson")
# Lines validated together (and stored together by ``accounts load``).
CHUNK_LINES = 10_000
# What a line's rejection names when the fault is the whole line (not JSON, not an object).
LINE_DOCUMENT = "account"
# A JSON number with a fraction or an exponent where a value starts (in a string too: then the
# line merely takes the exact route).
_FRACTIONAL_TEXT = re.compile(r":\s*-?\d+[.eE]")
_FRACTIONAL_BYTES = re.compile(rb":\s*-?\d+[.eE]")

Line = str | bytes
# The model's own validator and serializer, called without the model methods' keyword handling
# (a tenth of a line's time).
_VALIDATOR = AccountModel.__pydantic_validator__
_SERIALIZER = AccountModel.__pydantic_serializer__
T = TypeVar("T")


class AccountLineError(ValueError):
    """A line that is not a valid account; ``str()`` names the field, e.g. ``positions[0]``."""


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """A line that was not loaded, and why."""

    number: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.number}: {self.reason}"


@dataclass
class AccountChunk:
    """A chunk's good lines as ``(account id, state JSON)``, and its rejected lines."""

    states: list[tuple[str, bytes]] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)


def parse_account_chunk(
    numbered: Iterable[tuple[int, Line]], symbols: Container[str]
) -> AccountChunk:
    """Validate ``(line number, text)`` pairs; blank lines are skipped."""
    chunk = AccountChunk()
    for number, text in numbered:
        if not text.strip():
            continue
        try:
            chunk.states.append(account_state(text, symbols))
        except AccountLineError as error:
            chunk.rejected.append(RejectedLine(number, str(error)))
    return chunk


def account_state(text: Line, symbols: Container[str]) -> tuple[str, bytes]:
    """``(account id, state JSON)`` of one line; ``AccountLineError`` naming the field."""
    account = parse_account_line(text)
    for k, position in enumerate(account.positions):
        if position.symbol not in symbols:
            raise AccountLineError(f"positions[{k}].symbol: no brackets for {position.symbol}")
    return account.account_id, _SERIALIZER.to_json(account, exclude_none=True)


def parse_account_line(text: Line) -> AccountModel:
    """One line's account, its numbers exact; ``AccountLineError`` naming the field."""
    if not _has_fractional_number(text):
        try:
            return _VALIDATOR.validate_json(text)  # type: ignore[no-any-return]
        except ValidationError:
            pass  # rejected: the exact route below says why, as for a snapshot
    try:
        return AccountModel.model_validate(decimal_json(text, LINE_DOCUMENT))
    except FieldError as error:
        raise AccountLineError(str(error)) from None
    except ValidationError as error:
        raise AccountLineError(describe_validation_error(error, LINE_DOCUMENT)) from None


def _has_fractional_number(text: Line) -> bool:
    if isinstance(text, bytes):
        return _FRACTIONAL_BYTES.search(text) is not None
    return _FRACTIONAL_TEXT.search(text) is not None


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), read as they are needed."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk

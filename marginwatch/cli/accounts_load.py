"""``marginwatch accounts load``: a snapshot (JSON) or accounts as JSON Lines, into Redis.

The format is ``--format``, else ``jsonl`` for a file named ``*.jsonl`` or ``*.ndjson``, else
``json``; ``-`` reads stdin. A snapshot is one document, validated whole (marks, brackets and
the leverage tiers) and stored only if all of it is valid. JSON Lines are read, validated and
stored ``CHUNK_LINES`` lines at a time, so a file of any size is never held whole (the chunk
being stored and ``CHUNKS_AHEAD`` more, validated meanwhile by ``LOAD_WORKERS`` processes, the
chunks stored in the file's order so a later line of an account wins): each bad
line is named on stderr (``line 17: positions[0].quantity: must not be zero``, the first
``REJECTS_SHOWN`` of them) and skipped, the others are stored, and the command exits 2 saying
how many lines were rejected. Both are stored by ``store_states``: each account atomically,
its version bumped, a change-stream entry of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import redis

from marginwatch.base.account_lines import (
    CHUNK_LINES,
    LINES_FORMAT,
    LINES_SUFFIXES,
    SNAPSHOT_FORMAT,
    AccountChunk,
    Line,
    chunked,
    parse_account_chunk,
)
from marginwatch.base.exits import EXIT_OK
from marginwatch.base.settings import ConfigurationError, Settings, bracket_tables, redis_url
from marginwatch.base.snapshot import parse_snapshot
from marginwatch.cli.errors import InputError
from marginwatch.engine.brackets import BracketTable
from marginwatch.state.accounts import ensure_partition_count, store_accounts, store_states
from marginwatch.state.connection import open_redis

STDIN = "-"
# Rejected lines named one by one on stderr; the rest are counted.
REJECTS_SHOWN = 100
# Processes validating chunks while the command stores the one before, and how many chunks
# are handed to them ahead of the one being stored.
LOAD_WORKERS = 2
CHUNKS_AHEAD = LOAD_WORKERS


@dataclass(frozen=True)
class LoadRequest:
    """What to load and where to report."""

    path: str
    format: str | None
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO


def load_accounts(settings: Settings, request: LoadRequest) -> int:
    """Validate and store the accounts of ``request.path`` in its format."""
    tables = bracket_tables(settings)
    if input_format(request.path, request.format) == SNAPSHOT_FORMAT:
        tally = load_snapshot(settings, request, tables)
    else:
        tally = load_lines(settings, request, frozenset(tables))
    request.stdout.write(f"stored {tally.stored} accounts in {settings.partitions} partitions\n")
    tally.check()
    return EXIT_OK


def load_snapshot(
    settings: Settings, request: LoadRequest, tables: Mapping[str, BracketTable]
) -> LoadTally:
    """A snapshot, validated whole, then stored."""
    snapshot = parse_snapshot(_read_text(request), tables)
    client = open_redis(redis_url(settings))
    stored = store_accounts(client, snapshot.accounts, settings.partitions)
    return LoadTally(request.stderr, stored=stored)


def load_lines(settings: Settings, request: LoadRequest, symbols: Collection[str]) -> LoadTally:
    """The JSON Lines of ``request``, validated by a pool and stored."""
    with _lines(request) as lines, ProcessPoolExecutor(LOAD_WORKERS) as pool:
        store = LinesStore(open_redis(redis_url(settings)), pool, symbols, settings.partitions)
        return store.store(lines, LoadTally(request.stderr))


def input_format(path: str, chosen: str | None) -> str:
    """``chosen``, else by the file's name: ``jsonl`` for ``*.jsonl`` or ``*.ndjson``."""
    if chosen is not None:
        return chosen
    return LINES_FORMAT if path.lower().endswith(LINES_SUFFIXES) else SNAPSHOT_FORMAT


@dataclass
class LoadTally:
    """Accounts stored and lines rejected so far; the first rejections are named on stderr."""

    stderr: TextIO
    stored: int = 0
    rejected: int = 0

    def add(self, chunk: AccountChunk) -> None:
        self.stored += len(chunk.states)
        for rejection in chunk.rejected[: max(0, REJECTS_SHOWN - self.rejected)]:
            self.stderr.write(f"marginwatch: {rejection}\n")
        self.rejected += len(chunk.rejected)

    def check(self) -> None:
        """``InputError`` saying how many lines were rejected, if any were."""
        if self.rejected:
            shown = f" (the first {REJECTS_SHOWN} named)" if self.rejected > REJECTS_SHOWN else ""
            lines = "line" if self.rejected == 1 else "lines"
            stored = f"{self.stored} accounts stored"
            raise InputError(f"{self.rejected} {lines} rejected{shown}, {stored}")


@dataclass(frozen=True)
class LinesStore:
    """Where JSON Lines go: the pool validating them, Redis storing them."""

    client: redis.Redis
    pool: ProcessPoolExecutor
    symbols: Collection[str]
    partitions: int

    def store(self, lines: Iterable[Line], tally: LoadTally) -> LoadTally:
        """Validate and store ``lines`` a chunk at a time, in order."""
        ensure_partition_count(self.client, self.partitions)
        for chunk in self.validated(lines):
            store_states(self.client, chunk.states, self.partitions)
            tally.add(chunk)
        return tally

    def validated(self, lines: Iterable[Line]) -> Iterator[AccountChunk]:
        """The chunks validated by the pool, in order, ``CHUNKS_AHEAD`` handed out ahead."""
        pending: deque[Future[AccountChunk]] = deque()
        for numbered in chunked(enumerate(lines, start=1), CHUNK_LINES):
            pending.append(self.pool.submit(parse_account_chunk, numbered, self.symbols))
            if len(pending) > CHUNKS_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def _lines(request: LoadRequest) -> Iterator[Iterable[Line]]:
    """The lines of the file (as bytes), or of stdin (its bytes when it has them)."""
    if request.path == STDIN:
        yield getattr(request.stdin, "buffer", request.stdin)
        return
    with _open(request) as handle:
        yield handle


def _open(request: LoadRequest) -> BinaryIO:
    try:
        return Path(request.path).open("rb")
    except OSError as error:
        raise ConfigurationError(f"{request.path}: cannot read ({error.strerror})") from None


def _read_text(request: LoadRequest) -> str:
    if request.path == STDIN:
        return request.stdin.read()
    try:
        return Path(request.path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"{request.path}: cannot read ({error.strerror})") from None

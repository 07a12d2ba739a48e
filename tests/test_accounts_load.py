"""``marginwatch accounts load`` of JSON Lines, run as a user runs it, against a real Redis and
a real Redis Cluster: accounts readable with their versions and changes, bad lines named."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from marginwatch.base.account_lines import AccountChunk, RejectedLine
from marginwatch.cli import accounts_load
from marginwatch.cli.accounts_load import LoadTally, input_format
from marginwatch.cli.embedded_redis import RedisServer
from marginwatch.cli.errors import InputError
from marginwatch.state.accounts import iterate_changes, read_account
from marginwatch.state.connection import open_redis
from tests.servers import RedisCluster, start_redis_cluster

P = 4
EXAMPLES = Path(__file__).parent.parent / "examples"
SNAPSHOT = json.loads((EXAMPLES / "snapshot.json").read_text())


def load(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m marginwatch accounts load ARGS`` against ``url`` with P partitions."""
    env = {**os.environ, "MARGINWATCH_REDIS_URL": url, "MARGINWATCH_PARTITIONS": str(P)}
    return subprocess.run([sys.executable, "-m", "marginwatch", "accounts", "load", *args],
                          env=env, input=stdin, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def account_line(account_id: str, **changes: Any) -> str:
    """Alice's account of the example under another id, with top-level ``changes``."""
    return json.dumps(SNAPSHOT["accounts"][0] | {"account_id": account_id} | changes)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def versions(client: redis.Redis, names: list[str]) -> dict[str, int | None]:
    stored = {name: read_account(client, name, P) for name in names}
    return {name: None if found is None else found.version for name, found in stored.items()}


def version_and_wallet(client: redis.Redis, name: str) -> tuple[int, str] | None:
    stored = read_account(client, name, P)
    return None if stored is None else (stored.version, str(stored.account.cross_wallet_balance))


def changes(client: redis.Redis) -> list[tuple[str, int]]:
    """Every ``(account, version)`` on the change streams."""
    return sorted(
        (account_id, version)
        for partition in range(P)
        for _entry, account_id, version in iterate_changes(client, partition, "0")
    )


def test_the_example_lines_load_like_the_example_snapshot(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """examples/accounts.jsonl holds the snapshot's accounts: stored at version 1, the same
    accounts as the snapshot's, one change each."""
    result = load(redis_server.url, str(EXAMPLES / "accounts.jsonl"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stored 2 accounts in {P} partitions\n"
    assert result.stderr == ""
    from_lines = {name: read_account(redis_client, name, P) for name in ("alice", "bob")}
    assert load(redis_server.url, str(EXAMPLES / "snapshot.json")).returncode == 0
    from_snapshot = {name: read_account(redis_client, name, P) for name in ("alice", "bob")}
    assert {name: (s.version, s.account) for name, s in from_lines.items() if s} == {
        name: (1, s.account) for name, s in from_snapshot.items() if s
    }
    assert versions(redis_client, ["alice", "bob"]) == {"alice": 2, "bob": 2}
    assert changes(redis_client) == [("alice", 1), ("alice", 2), ("bob", 1), ("bob", 2)]


def test_a_bad_line_is_named_and_the_others_are_stored(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Line 3's zero quantity is named with its field; lines 1, 2 and 4 are stored; the blank
    line is skipped; exit 2 with the count on the last line."""
    bad = account_line("c", positions=[SNAPSHOT["accounts"][0]["positions"][0] | {"quantity": 0}])
    path = write_lines(tmp_path / "accounts.ndjson", [account_line("a"), account_line("b"), bad,
                                                      "", account_line("d")])  # fmt: skip
    result = load(redis_server.url, str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "marginwatch: line 3: positions[0].quantity: must not be zero (a closed position is left "
        "out)",
        "marginwatch: 1 line rejected, 3 accounts stored",
    ]
    assert result.stdout == f"stored 3 accounts in {P} partitions\n"
    assert versions(redis_client, ["a", "b", "c", "d"]) == {"a": 1, "b": 1, "c": None, "d": 1}


def test_stdin_with_the_format_flag(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    """``-`` reads stdin; ``--format jsonl`` says what it holds."""
    result = load(redis_server.url, "-", "--format", "jsonl",
                  stdin=f"{account_line('a')}\n{account_line('b')}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert versions(redis_client, ["a", "b"]) == {"a": 1, "b": 1}


def test_a_reload_bumps_versions(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The same file again: version 2 and a second change each; an account met twice in the
    file ends with its later line."""
    path = write_lines(tmp_path / "accounts.jsonl", [account_line("a"), account_line("b")])
    assert load(redis_server.url, str(path)).returncode == 0
    lines = [account_line("a"), account_line("b"), account_line("a", cross_wallet_balance="7")]
    assert load(redis_server.url, str(write_lines(tmp_path / "again.jsonl", lines))).returncode == 0
    assert versions(redis_client, ["a", "b"]) == {"a": 3, "b": 2}
    assert version_and_wallet(redis_client, "a") == (3, "7")
    assert changes(redis_client) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]


def test_chunks_are_stored_in_order_across_the_workers(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Lines over several chunks, the validating processes ahead of the store: every account
    once, and an account repeated in the last chunk ends with that line."""
    names = [f"acct-{n:05d}" for n in range(2 * accounts_load.CHUNK_LINES + 10)]
    lines = [account_line(name) for name in names] + [
        account_line("acct-00000", cross_wallet_balance="9")
    ]
    result = load(redis_server.url, str(write_lines(tmp_path / "many.jsonl", lines)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stored {len(lines)} accounts in {P} partitions\n"
    assert version_and_wallet(redis_client, "acct-00000") == (2, "9")
    assert sum(len(list(iterate_changes(redis_client, p, "0"))) for p in range(P)) == len(lines)


def test_a_json_file_is_read_as_a_snapshot(redis_server: RedisServer, tmp_path: Path) -> None:
    """Without ``--format``, only *.jsonl and *.ndjson are read as JSON Lines."""
    path = write_lines(tmp_path / "accounts.json", [account_line("a"), account_line("b")])
    result = load(redis_server.url, str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("marginwatch: snapshot: not valid JSON")
    assert load(redis_server.url, str(path), "--format", "jsonl").returncode == 0
    assert [input_format(name, None) for name in ("a.JSONL", "a.ndjson", "a.json", "-")] == [
        "jsonl", "jsonl", "json", "json"]  # fmt: skip


def test_only_the_first_rejections_are_named() -> None:
    """Past ``REJECTS_SHOWN`` rejected lines, the rest are counted, and the count says so."""
    stderr = io.StringIO()
    tally = LoadTally(stderr)
    shown = accounts_load.REJECTS_SHOWN
    tally.add(AccountChunk([("a", b"{}")], [RejectedLine(n, "bad") for n in range(shown + 5)]))
    assert len(stderr.getvalue().splitlines()) == shown
    with pytest.raises(InputError, match=f"^{shown + 5} lines rejected \\(the first {shown} named"):
        tally.check()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = start_redis_cluster()
    yield cluster
    cluster.stop()


def test_json_lines_load_on_a_redis_cluster(redis_cluster: RedisCluster, tmp_path: Path) -> None:
    """On three primaries: each partition's script call goes to the node of its slot; every
    account is readable through the cluster client at version 1, with its change."""
    names = [f"acct-{n}" for n in range(40)]
    path = write_lines(tmp_path / "accounts.jsonl", [account_line(name) for name in names])
    result = load(redis_cluster.url, str(path))
    assert result.returncode == 0, result.stderr
    client = open_redis(redis_cluster.url)
    try:
        assert versions(client, names) == dict.fromkeys(names, 1)
        assert changes(client) == sorted((name, 1) for name in names)
    finally:
        client.close()

"""Redis users per component (deploy/redis/users.acl, loaded by deploy/redis/start-redis.sh):
a real redis-server with those ACLs; each credential is refused what its component must not
do, and each daemon runs its whole job under its own user."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from marginwatch.base import keys
from marginwatch.base.ticks import Tick
from marginwatch.cli.embedded_redis import free_port
from marginwatch.producer.publisher import Publisher
from tests.polling import wait_for
from tests.test_tls import SNAPSHOT

DEPLOY = Path(__file__).parent.parent / "deploy" / "redis"
USERS = (
    "marginwatch-producer",
    "marginwatch-worker",
    "marginwatch-executor",
    "marginwatch-admin",
    "marginwatch-replica",
)


@dataclass
class AclRedis:
    port: int
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user))


def start_script(
    directory: Path, port: int, *args: str, name: str = "acl", **environ: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_SECRETS": str(directory), "REDIS_ACL_FILE": str(directory / name),
           "REDIS_ACL_TEMPLATE": str(DEPLOY / "users.acl"), **environ}  # fmt: skip
    command = ["sh", str(DEPLOY / "start-redis.sh"), "--port", str(port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", str(directory), *args]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    passwords = {user: secrets.token_hex(16) for user in USERS}
    for user, password in passwords.items():
        (tmp_path / f"redis-{user}.password").write_text(password + "\n", encoding="utf-8")
    port = free_port()
    server = AclRedis(port, passwords, start_script(tmp_path, port))

    def answers() -> bool:
        try:
            return bool(server.client("marginwatch-admin").ping())
        except redis.RedisError:
            return False

    wait_for(answers, "redis-server with the ACL file")
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


def test_the_start_script_refuses_a_missing_password(tmp_path: Path) -> None:
    """No password file for a user: the script exits with a line naming the file."""
    started = start_script(tmp_path, free_port())
    assert started.wait(timeout=10) == 1
    assert started.stderr is not None
    assert b"redis-marginwatch-producer.password" in started.stderr.read()


def test_the_default_user_is_off_and_passwords_are_hashed(acl_redis: AclRedis) -> None:
    """No access without a user; the ACL file holds hashes, not the passwords."""
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_redis.port).ping()
    rules: list[str] = [str(r) for r in acl_redis.client("marginwatch-admin").acl_list()]
    assert not any(password in " ".join(rules) for password in acl_redis.passwords.values())


REFUSED = {
    "producer changes an account": ("producer", "HSET", keys.account(0, "E"), "state", "{}"),
    "producer sends an account event": ("producer", "XADD", keys.account_events(0), "*", "e", "{}"),
    "worker changes an account": ("worker", "HSET", keys.account(0, "E"), "state", "{}"),
    "worker changes a ledger": ("worker", "SET", keys.insurance_fund(0), "1"),
    "worker changes a mark": ("worker", "HSET", keys.PRICES, "BTCUSDT", "x"),
    "executor changes a mark": ("executor", "HSET", keys.PRICES, "BTCUSDT", "x"),
    "executor flushes": ("executor", "FLUSHALL"),
}


@pytest.mark.parametrize("attempt", REFUSED.values(), ids=REFUSED.keys())
def test_each_credential_is_refused_what_its_component_must_not_do(
    acl_redis: AclRedis, attempt: tuple[str, ...]
) -> None:
    """The producer cannot change an account or send an account event; the worker cannot
    change an account, a ledger or a mark; the executor cannot change a mark; none may flush."""
    user, *command = attempt
    client = acl_redis.client(f"marginwatch-{user}")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_the_producer_publishes_under_its_user(acl_redis: AclRedis) -> None:
    """What the producer must do, it may."""
    producer = acl_redis.client("marginwatch-producer")
    Publisher(producer).publish([Tick("BTCUSDT", Decimal(50_000), time.time_ns() // 1_000_000)])
    assert acl_redis.client("marginwatch-admin").hexists(keys.PRICES, "BTCUSDT")


def test_every_daemon_runs_its_whole_job_under_its_own_user(
    acl_redis: AclRedis, tmp_path: Path
) -> None:
    """The admin loads the accounts; the producer, a worker (with a stress scenario) and an
    executor, each under its own user, take an account through a margin call to its
    liquidation (the worker writing its ADL sketch); no daemon is refused anything; the
    executor's user reads the sketch (status runs under it in the compose deployment)."""
    admin = acl_redis.client("marginwatch-admin")
    (tmp_path / "snapshot.json").write_text(json.dumps(SNAPSHOT), encoding="utf-8")
    assert run(acl_redis.url("marginwatch-admin"), "accounts", "load",
               str(tmp_path / "snapshot.json")).returncode == 0  # fmt: skip
    admin.set(keys.insurance_fund(0), "1000")
    replay(acl_redis, tmp_path, "50000")
    daemons = [start(acl_redis.url(f"marginwatch-{name}"), tmp_path / f"{name}.log", *args)
               for name, args in (("worker", ("worker", "--partitions", "0")),
                                  ("executor", ("executor",)))]  # fmt: skip
    try:
        wait_for(lambda: admin.get(keys.partition_evaluated(0)), "an evaluation")
        wait_for(lambda: admin.exists(keys.partition_stress(0)), "the stress figures stored")
        wait_for(lambda: admin.hexists(keys.adl_sketches(0), "written_at"), "the ADL sketch")
        replay(acl_redis, tmp_path, "48950")
        wait_for(lambda: admin.xlen(keys.margin_call_events(0)) == 1, "the margin call")
        replay(acl_redis, tmp_path, "48000")
        wait_for(lambda: admin.xlen(keys.liquidations(0)) == 1, "the liquidation")
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=30)
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert acl_redis.client("marginwatch-executor").hexists(keys.adl_sketches(0), "written_at")
    assert "NOPERM" not in logs
    assert "NoPermission" not in logs


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MARGINWATCH_REDIS_URL": url, "MARGINWATCH_PARTITIONS": "1"}
    return subprocess.run([sys.executable, "-m", "marginwatch", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)  # fmt: skip


def start(url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MARGINWATCH_REDIS_URL": url, "MARGINWATCH_PARTITIONS": "1",
           "MARGINWATCH_STRESS_SCENARIOS": '["BTCUSDT:-20%"]'}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "marginwatch", *args], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip


def replay(server: AclRedis, directory: Path, price: str) -> None:
    """One tick through the real producer, under the producer's user."""
    path = directory / f"tick-{price}.jsonl"
    tick = {"symbol": "BTCUSDT", "event_time": time.time_ns() // 1_000_000, "mark_price": price}
    path.write_text(json.dumps(tick) + "\n", encoding="utf-8")
    ran = run(server.url("marginwatch-producer"), "producer", "--source", "replay", "--file",
              str(path), "--speed", "0")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "NOPERM" not in ran.stderr


def test_a_replica_syncs_as_the_replica_user_which_can_do_nothing_else(
    acl_redis: AclRedis, tmp_path: Path
) -> None:
    """A second server, started by the script with REDIS_MASTER_USER, replicates the first
    (its password from the secret file, not the command line); that user cannot read a key."""
    directory = tmp_path / "replica"
    directory.mkdir()
    for user, password in acl_redis.passwords.items():
        (directory / f"redis-{user}.password").write_text(password, encoding="utf-8")
    port = free_port()
    replica = start_script(directory, port, "--replicaof", "127.0.0.1", str(acl_redis.port),
                           REDIS_MASTER_USER="marginwatch-replica")  # fmt: skip
    try:
        admin = redis.Redis(port=port, username="marginwatch-admin",
                            password=acl_redis.passwords["marginwatch-admin"])  # fmt: skip
        wait_for(lambda: _linked(admin), "the replica in sync through its user")
        acl_redis.client("marginwatch-admin").set("mw:config:probe", "1")
        wait_for(lambda: admin.get("mw:config:probe") == b"1", "the write replicated")
        assert acl_redis.passwords["marginwatch-replica"] not in " ".join(_command_lines())
    finally:
        replica.terminate()
        replica.wait(timeout=10)
    with pytest.raises(redis.exceptions.NoPermissionError):
        acl_redis.client("marginwatch-replica").get("mw:config:probe")


def _linked(client: redis.Redis) -> bool:
    try:
        info: dict[str, object] = client.info("replication")
    except redis.RedisError:
        return False
    return info.get("master_link_status") == "up"


def _command_lines() -> list[str]:
    """Every process's command line (a password must not be in any)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found

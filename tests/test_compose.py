"""The compose deployment, checked without a Docker engine: ``docker-compose.yml`` against the
Compose Specification's JSON Schema and the deployment's invariants, the Dockerfile, Prometheus
(with ``promtool``) and Grafana provisioning."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis as redis_client
import yaml
from prometheus_client import CollectorRegistry

from marginwatch.base.health import Health
from marginwatch.base.metrics import serve_metrics
from marginwatch.base.partitions import parse_partitions
from marginwatch.cli.embedded_redis import free_port
from marginwatch.cli.main import _parser
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The Compose Specification's schema as check-jsonschema ships it (``vendor.compose-spec``).
COMPOSE_SCHEMA = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"

EXPECTED_SERVICES = {
    "redis",
    "producer",
    "worker-a",
    "worker-b",
    "executor",
    "prometheus",
    "alertmanager",
    "grafana",
}
METRICS_PORT = "9100"
PARTITIONS = 8
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}
# Grafana's built-in datasources, which need no provisioning.
GRAFANA_BUILTIN_DATASOURCES = {"grafana", "-- Grafana --", "-- Mixed --", "-- Dashboard --"}

# Compose interpolation: $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, $NAME.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# ---- helpers ------------------------------------------------------------------------------------


def interpolate(value: Any, environment: Mapping[str, str]) -> Any:
    """``value`` with Compose's variable interpolation applied to every string in it."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda match: _substitute(match, environment), value)
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    return value


def _substitute(match: re.Match[str], environment: Mapping[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name = match["name"] or match["bare"]
    operator, argument = match["operator"], match["argument"] or ""
    value = environment.get(name)
    unset = value is None or (operator is not None and operator.startswith(":") and not value)
    if operator in {":-", "-"}:
        return argument if unset else str(value)
    if operator in {":?", "?"}:
        if unset:
            pytest.fail(f"${{{name}}} is required ({argument}): the deployment has no default")
        return str(value)
    if operator in {":+", "+"}:
        return "" if unset else argument
    return value or ""


@cache
def raw_compose() -> dict[str, Any]:
    """``docker-compose.yml`` as written (YAML anchors and merge keys resolved)."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def compose(environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``docker-compose.yml`` as Compose sees it with ``environment`` (default: nothing set)."""
    interpolated: dict[str, Any] = interpolate(raw_compose(), environment or {})
    return interpolated


def services(environment: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose(environment)["services"]
    return found


def is_long_running(service: Mapping[str, Any]) -> bool:
    """Started by ``docker compose up`` and kept running (one-shot tools live in profiles)."""
    return not service.get("profiles")


def marginwatch_services() -> dict[str, dict[str, Any]]:
    """The services running the image built from this repository's Dockerfile."""
    return {name: service for name, service in services().items() if "build" in service}


def marginwatch_daemons() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in marginwatch_services().items() if is_long_running(s)}


def argv(service: Mapping[str, Any]) -> list[str]:
    """The service's command as an argument vector (a string is split as Compose splits it)."""
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    variables = service.get("environment", {})
    if isinstance(variables, list):
        variables = dict(item.partition("=")[::2] for item in variables)
    return {key: str(value) for key, value in variables.items()}


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(source, target)`` of every volume of the service, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            found.append((source, rest.partition(":")[0]))
        else:
            found.append((str(volume.get("source", "")), str(volume["target"])))
    return found


def is_bind_mount(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def mount_target(service: str, source: str) -> str:
    """Where ``service`` mounts the repository path ``source``."""
    for mounted, target in mounts(services()[service]):
        if is_bind_mount(mounted) and (ROOT / mounted).resolve() == (ROOT / source).resolve():
            return target
    pytest.fail(f"{service} does not mount ./{source}")


def option(command: list[str], name: str) -> str:
    """The value following ``name`` in ``command``."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def healthcheck_command(service: Mapping[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    return config


def scrape_targets() -> dict[str, set[str]]:
    """Static targets by job name."""
    return {
        job["job_name"]: {target for group in job["static_configs"] for target in group["targets"]}
        for job in prometheus_config()["scrape_configs"]
    }


def promtool() -> str:
    """The ``promtool`` executable; CI installs it, so its absence is a failure, not a skip."""
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.fail(
            "promtool is required to check deploy/prometheus/prometheus.yml and is not installed: "
            "apt-get install prometheus (Debian), or put Prometheus' promtool on PATH"
        )
    return found


def run_promtool(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and line[0] != "#"]


def datasource_uids(node: Any) -> Iterator[str]:
    """Every datasource uid a Grafana dashboard refers to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict) and "uid" in value:
                yield str(value["uid"])
            elif key == "datasource" and isinstance(value, str):
                yield value
            else:
                yield from datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_uids(item)


# ---- the Compose file ---------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    """docker-compose.yml, as written and interpolated, validates against the Compose Spec."""
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    dialect = jsonschema.validators.validator_for(schema)
    dialect.check_schema(schema)
    validator = dialect(schema)
    for document in (raw_compose(), compose()):
        errors = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
        assert not errors, "\n".join(
            f"{'.'.join(map(str, error.path)) or '<root>'}: {error.message}" for error in errors
        )


def test_every_component_is_a_service() -> None:
    """Redis, the producer, both workers, the executor and the monitoring stack are services."""
    assert set(services()) >= EXPECTED_SERVICES


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_long_running_services_have_healthchecks_and_restart_policies(name: str) -> None:
    """Every long-running service has a real health check and restarts when it stops."""
    service = services()[name]
    assert is_long_running(service)
    healthcheck = service.get("healthcheck", {})
    assert not healthcheck.get("disable"), f"{name}: health check disabled"
    test = healthcheck.get("test")
    assert isinstance(test, list), f"{name}: no health check test"
    assert test[0] in {"CMD", "CMD-SHELL"}
    assert service.get("restart") in RESTART_POLICIES


def test_no_long_running_service_is_left_without_healthcheck() -> None:
    """Any service ``docker compose up`` starts, even one added later, is checked and restarts."""
    for name, service in services().items():
        if is_long_running(service):
            healthcheck = service.get("healthcheck", {})
            assert healthcheck.get("test"), f"{name}: no health check"
            assert not healthcheck.get("disable"), f"{name}: health check disabled"
            assert service.get("restart") in RESTART_POLICIES, name


def test_redis_uses_aof_and_loads_its_users_from_secrets() -> None:
    """Redis appends every write (fsync each second by default), starts through start-redis.sh
    with every user's password secret, and its health check authenticates as the admin without
    a password on the command line."""
    redis = services()["redis"]
    assert redis["entrypoint"] == ["sh", "/etc/redis/start-redis.sh"]
    assert option(argv(redis), "--appendonly") == "yes"
    assert option(argv(redis), "--appendfsync") == "everysec"
    users = {line.split()[1] for line in (ROOT / "deploy/redis/users.acl").read_text().splitlines()
             if line.startswith("user ") and line.split()[1] != "default"}  # fmt: skip
    assert set(redis["secrets"]) == {f"redis-{user}.password" for user in users}
    assert ("./deploy/redis", "/etc/redis") in mounts(redis)
    assert ("redis-data", "/data") in mounts(redis)
    check = healthcheck_command(redis)
    assert "REDISCLI_AUTH=" in check
    assert "--user marginwatch-admin" in check
    assert "PONG" in check, "an error reply (NOAUTH) must not pass"


COMPONENT_USERS = {"producer": "producer", "worker-a": "worker", "worker-b": "worker",
                   "executor": "executor", "executor-webhooks": "executor",
                   "accounts-load": "admin"}  # fmt: skip


def test_each_marginwatch_service_reads_its_own_redis_user_from_a_secret() -> None:
    """MARGINWATCH_REDIS_URL is a secret file of the component's user (never in the
    environment); executors also get the webhook secret; every service waits for Redis."""
    raw = raw_compose()["services"]
    single = {n for n, service in marginwatch_services().items()
              if "cluster" not in service.get("profiles", [])}  # fmt: skip
    assert single == set(COMPONENT_USERS)
    for name, user in COMPONENT_USERS.items():
        environment = environment_of(raw[name])
        assert environment["MARGINWATCH_SECRETS_DIR"] == "/run/secrets", name
        assert "MARGINWATCH_REDIS_URL" not in environment, name
        targets = {s["target"]: s["source"] for s in raw[name]["secrets"]}
        assert targets["MARGINWATCH_REDIS_URL"] == f"{user}-redis-url", name
        assert ("MARGINWATCH_WEBHOOK_SECRET" in targets) == (user == "executor"), name
        assert raw[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_the_cluster_profile_runs_on_a_redis_cluster_and_rabbitmq() -> None:
    """Six Redis nodes with replica auth, a one-shot that creates the cluster, RabbitMQ; the
    daemons with every node in their URL secret, the broker URL secret, replica waits, and two
    executor pairs covering the partitions; nothing of it starts without the profile."""
    every = services()
    cluster = {n: s for n, s in every.items() if "cluster" in s.get("profiles", [])}
    nodes = [f"redis-node-{n}" for n in range(1, 7)]
    assert set(nodes) | {"redis-cluster-create", "rabbitmq"} <= set(cluster)
    for node in nodes:
        assert "--cluster-enabled" in argv(cluster[node])
        assert environment_of(cluster[node])["REDIS_MASTER_USER"] == "marginwatch-replica"
    assert "--cluster-replicas 1" in " ".join(argv(cluster["redis-cluster-create"]))
    daemons = {n: s for n, s in cluster.items() if "build" in s}
    executors: dict[str, list[str]] = {}
    for name, service in daemons.items():
        targets = {s["target"]: s["source"] for s in service["secrets"]}
        assert targets["MARGINWATCH_REDIS_URL"].startswith("cluster-"), name
        assert targets["MARGINWATCH_BROKER_URL"] == "broker-url", name
        assert environment_of(service)["MARGINWATCH_WAIT_REPLICAS"] == "1", name
        args = _parser().parse_args(argv(service)[1:])
        if args.command == "executor" and "actions" in args.queues:
            executors.setdefault(args.partitions, []).append(name)
    assert {r: len(pair) for r, pair in executors.items()} == {"0-3": 2, "4-7": 2}


def test_no_secret_has_a_default_and_every_secret_is_a_file() -> None:
    """No change-me placeholder anywhere; each secret comes from a file under ./secrets, which
    Compose refuses to start without."""
    assert "change-me" not in COMPOSE_FILE.read_text(encoding="utf-8")
    declared = raw_compose()["secrets"]
    assert all(entry["file"] == f"./secrets/{name}" for name, entry in declared.items())
    every = raw_compose()["services"].values()
    used = {s if isinstance(s, str) else s["source"] for service in every
            for s in service.get("secrets", [])}  # fmt: skip
    assert used == set(declared)


def test_make_secrets_writes_urls_that_log_in_as_their_users(tmp_path: Path) -> None:
    """deploy/make-secrets.sh writes each component's URL with its user's password; a real
    redis-server started by start-redis.sh from those files lets each URL in; a second run
    changes nothing."""
    secrets = tmp_path / "secrets"
    subprocess.run(["sh", str(ROOT / "deploy/make-secrets.sh"), str(secrets)], check=True,
                   capture_output=True)  # fmt: skip
    before = {f.name: f.read_text() for f in secrets.iterdir()}
    subprocess.run(["sh", str(ROOT / "deploy/make-secrets.sh"), str(secrets)], check=True,
                   capture_output=True)  # fmt: skip
    assert {f.name: f.read_text() for f in secrets.iterdir()} == before
    port = free_port()
    env = {**os.environ, "REDIS_SECRETS": str(secrets), "REDIS_ACL_FILE": str(tmp_path / "acl"),
           "REDIS_ACL_TEMPLATE": str(ROOT / "deploy/redis/users.acl")}  # fmt: skip
    server = subprocess.Popen(["sh", str(ROOT / "deploy/redis/start-redis.sh"), "--port",
                               str(port), "--bind", "127.0.0.1", "--save", "", "--dir",
                               str(tmp_path)], env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        for user in set(COMPONENT_USERS.values()):
            url = (secrets / f"{user}-redis-url").read_text().strip()
            assert url.startswith(f"redis://marginwatch-{user}:")
            nodes = (secrets / f"cluster-{user}-redis-url").read_text().strip().split(",")
            assert [n.rsplit("@", 1)[0] for n in nodes] == [url.rsplit("@", 1)[0]] * 6
            local = url.replace("@redis:6379/", f"@127.0.0.1:{port}/")
            wait_for(lambda url=local: _pings(url), f"{user} logs in")
    finally:
        server.terminate()
        server.wait(timeout=10)


def _pings(url: str) -> bool:
    try:
        return bool(redis_client.Redis.from_url(url).ping())
    except redis_client.RedisError:
        return False


def test_partition_count_is_one_per_deployment_and_workers_cover_it() -> None:
    """Every service has P = 8; the workers' --partitions ranges together cover 0..P-1."""
    counts = {
        environment_of(s).get("MARGINWATCH_PARTITIONS") for s in marginwatch_services().values()
    }
    assert counts == {str(PARTITIONS)}
    covered: set[int] = set()
    for service in marginwatch_daemons().values():
        args = _parser().parse_args(argv(service)[1:])
        if args.command == "worker":
            covered.update(parse_partitions(args.partitions, PARTITIONS))
    assert covered == set(range(PARTITIONS))


@pytest.mark.parametrize(
    "environment",
    [{}, {"PRODUCER_SOURCE": "binance", "PRODUCER_ARGS": "--symbols BTCUSDT,ETHUSDT"}],
    ids=["defaults", "binance"],
)
def test_commands_parse_with_the_marginwatch_cli(environment: dict[str, str]) -> None:
    """Every marginwatch service's command is a valid ``marginwatch`` command line."""
    for name, service in services(environment).items():
        if "build" not in service:
            continue
        command = argv(service)
        assert command[0] == "marginwatch", name
        _parser().parse_args(command[1:])
    producer = _parser().parse_args(argv(services(environment)["producer"])[1:])
    assert producer.source == environment.get("PRODUCER_SOURCE", "synthetic")


def test_one_executor_consumes_actions() -> None:
    """One executor takes actions (and so runs the account-events applier, a single consumer)."""
    appliers = []
    for name, service in marginwatch_daemons().items():
        args = _parser().parse_args(argv(service)[1:])
        queues = str(getattr(args, "queues", "actions,webhooks")).split(",")
        if args.command == "executor" and "actions" in {queue.strip() for queue in queues}:
            appliers.append(name)
    assert appliers == ["executor"]
    service = services()["executor"]
    assert service.get("hostname") == "executor", "a stable hostname keeps the consumer name"
    assert "replicas" not in service.get("deploy", {})
    assert "scale" not in service


def test_daemon_healthchecks_probe_the_liveness_endpoint() -> None:
    """Each daemon serves /healthz on MARGINWATCH_METRICS_PORT; its health check requests it."""
    for name, service in marginwatch_daemons().items():
        assert environment_of(service).get("MARGINWATCH_METRICS_PORT") == METRICS_PORT, name
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in test[3], name


def test_healthcheck_passes_while_the_daemon_is_alive_and_fails_otherwise() -> None:
    """The daemons' health-check one-liner, against marginwatch's own server: exit 0 on a 200
    from /healthz, non-zero on a 503 (a loop stopped) and when nothing answers."""
    code = services()["worker-a"]["healthcheck"]["test"][3]
    health = Health()
    heartbeat = health.heartbeat("dispatcher", 60)
    server = serve_metrics(CollectorRegistry(), free_port(), addr="127.0.0.1", health=health)
    assert server is not None
    one_liner = code.replace(f":{METRICS_PORT}/", f":{server.server_address[1]}/")

    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-c", one_liner], capture_output=True,
                              timeout=30, check=False)  # fmt: skip

    try:
        alive = run()
        heartbeat.stale_after = -1.0  # silent for longer than allowed
        stopped = run()
    finally:
        server.shutdown()
        server.server_close()
    refused = run()
    assert alive.returncode == 0, alive.stderr
    assert stopped.returncode != 0
    assert b"503" in stopped.stderr
    assert refused.returncode != 0


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("prometheus", "http://127.0.0.1:9090/-/healthy"),
        ("alertmanager", "http://127.0.0.1:9093/-/healthy"),
        ("grafana", "http://127.0.0.1:3000/api/health"),
    ],
)
def test_monitoring_healthchecks_use_wget(name: str, url: str) -> None:
    """Prometheus, Alertmanager and Grafana are checked with wget on their health endpoints."""
    test = services()[name]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "wget"]
    assert test[-1] == url


def test_state_lives_in_named_volumes() -> None:
    """Redis, Prometheus and Grafana keep their data in declared named volumes."""
    declared = set(compose()["volumes"])
    for owner, volume, target in [
        ("redis", "redis-data", "/data"),
        ("prometheus", "prometheus-data", "/prometheus"),
        ("grafana", "grafana-data", "/var/lib/grafana"),
    ]:
        assert (volume, target) in mounts(services()[owner])
        assert volume in declared
    for name, service in services().items():
        for source, _ in mounts(service):
            assert is_bind_mount(source) or source in declared, f"{name}: undeclared {source}"


def test_mounted_local_paths_exist() -> None:
    """Every bind-mounted path exists in the repository (directories as directories)."""
    for name, service in services().items():
        for source, target in mounts(service):
            if not is_bind_mount(source):
                continue
            path = ROOT / source
            assert path.exists(), f"{name} mounts {source} at {target}; it does not exist"
    assert (ROOT / "dashboards").is_dir()
    assert (ROOT / "deploy" / "prometheus" / "rules").is_dir()


def test_accounts_load_is_a_one_shot_setup_service() -> None:
    """``accounts-load`` runs only on request (profile setup), once, on the mounted snapshot."""
    service = services()["accounts-load"]
    assert service["profiles"] == ["setup"]
    assert service["restart"] == "no"
    args = _parser().parse_args(argv(service)[1:])
    assert (args.command, args.accounts_command) == ("accounts", "load")
    assert args.snapshot in {target for _, target in mounts(service)}


def test_published_ports_are_distinct_and_unauthenticated_ones_stay_local() -> None:
    """Host ports do not collide; Prometheus and Alertmanager are published on loopback only."""
    published: dict[str, str] = {}
    for name, service in services().items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            host_port = parts[-2]
            assert host_port not in published, f"{name}, {published.get(host_port)}: {host_port}"
            published[host_port] = name
            if name in {"prometheus", "alertmanager"}:
                assert parts[0] == "127.0.0.1", f"{name} has no authentication: bind to loopback"
    assert "redis" not in published.values()


# ---- the image ----------------------------------------------------------------------------------


def test_dockerfile_installs_the_project_and_runs_unprivileged() -> None:
    """python:3.11-slim, ``pip install .``, a non-root user, ``marginwatch --help`` by default."""
    instructions = dockerfile_instructions()
    stage = final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim"
    assert any(name == "RUN" and "pip install ." in args for name, args in instructions)
    users = [args for name, args in stage if name == "USER"]
    assert users, "the image runs as root"
    assert users[-1] not in {"root", "0"}
    assert [json.loads(args) for name, args in stage if name == "CMD"] == [
        ["marginwatch", "--help"]
    ]


def test_image_context_holds_every_package() -> None:
    """The Dockerfile copies every package pyproject.toml ships, and .dockerignore keeps them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").is_file() and any(fnmatch.fnmatch(path.name, p) for p in include)
    }
    copied = {
        source.rstrip("/").removeprefix("./")
        for name, args in dockerfile_instructions()
        if name == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert packages <= copied
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    patterns = dockerignore_patterns()
    ignored = [s for s in copied if any(fnmatch.fnmatch(s, p) for p in patterns)]
    assert not ignored, f".dockerignore excludes what the Dockerfile copies: {ignored}"
    assert {".git", ".venv"} <= set(patterns)


# ---- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_scrapes_every_daemon() -> None:
    """One job per role; every daemon's metrics port is a target; scraped every 5 s."""
    config = prometheus_config()
    assert config["global"]["scrape_interval"] == "5s"
    targets = scrape_targets()
    assert targets["marginwatch-producer"] == {"producer:9100"}
    assert targets["marginwatch-worker"] == {"worker-a:9100", "worker-b:9100"}
    assert targets["marginwatch-executor"] == {"executor:9100", "executor-webhooks:9100"}
    scraped = {target for job, found in targets.items() if job.startswith("marginwatch-")
               for target in found}  # fmt: skip
    assert scraped == {f"{name}:{METRICS_PORT}" for name in marginwatch_daemons()}


def test_prometheus_loads_mounted_rules_and_alerts_the_alertmanager_service() -> None:
    """rule_files is the mounted rules directory; alerts go to the alertmanager service."""
    config = prometheus_config()
    rules_target = mount_target("prometheus", "deploy/prometheus/rules")
    assert config["rule_files"] == [f"{rules_target}/*.yml"]
    assert mount_target("prometheus", "deploy/prometheus/prometheus.yml") == (
        "/etc/prometheus/prometheus.yml"
    )
    alertmanagers = config["alerting"]["alertmanagers"]
    targets = {t for am in alertmanagers for g in am["static_configs"] for t in g["targets"]}
    assert targets == {"alertmanager:9093"}
    assert "alertmanager" in services()


def test_promtool_accepts_the_prometheus_config() -> None:
    """``promtool check config`` accepts deploy/prometheus/prometheus.yml."""
    result = run_promtool(PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_config_with_the_repository_rules(tmp_path: Path) -> None:
    """The config with the rules Prometheus will load (deploy/prometheus/rules/*.yml) checks."""
    config = prometheus_config()
    config["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "rules" / "*.yml")]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_promtool(copy)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Grafana ------------------------------------------------------------------------------------


def test_grafana_provisions_the_prometheus_datasource() -> None:
    """Datasource uid "prometheus" at http://prometheus:9090; provisioning is mounted."""
    assert mount_target("grafana", "deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    document = yaml.safe_load(
        (GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )
    by_uid = {source["uid"]: source for source in document["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"


def test_grafana_provider_reads_the_mounted_dashboards() -> None:
    """The dashboard provider reads the directory where ./dashboards is mounted."""
    paths = {
        provider["options"]["path"]
        for file in (GRAFANA_PROVISIONING / "dashboards").glob("*.yml")
        for provider in yaml.safe_load(file.read_text(encoding="utf-8"))["providers"]
    }
    assert paths == {mount_target("grafana", "dashboards")} == {"/var/lib/grafana/dashboards"}


def test_dashboards_use_provisioned_datasources() -> None:
    """Every datasource uid in dashboards/*.json is provisioned (or Grafana's own, or a $var)."""
    provisioned = {
        source["uid"]
        for file in (GRAFANA_PROVISIONING / "datasources").glob("*.yml")
        for source in yaml.safe_load(file.read_text(encoding="utf-8"))["datasources"]
    }
    for dashboard in sorted((ROOT / "dashboards").glob("*.json")):
        uids = set(datasource_uids(json.loads(dashboard.read_text(encoding="utf-8"))))
        unknown = {
            uid
            for uid in uids
            if not uid.startswith("$") and uid not in provisioned | GRAFANA_BUILTIN_DATASOURCES
        }
        assert not unknown, f"{dashboard.name}: datasources not provisioned: {sorted(unknown)}"

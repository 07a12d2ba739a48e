"""The alert rules and the Alertmanager configuration: checked and unit-tested with promtool and
amtool (Debian packages ``prometheus`` and ``prometheus-alertmanager``), and held to the
conventions every alert keeps (duration, severity, annotations, a runbook, tests both ways)."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "marginwatch.yml"
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
# The alerts an operator relies on (docs/operations.md), by what they watch.
REQUIRED_ALERTS = {
    "MarginwatchMarginCallSurge",
    "MarginwatchLiquidationSurge",
    "MarginwatchPriceFeedStale",
    "MarginwatchPartitionNotProgressing",
    "MarginwatchTickToActionLatencyHigh",
    "MarginwatchWorkerDown",
    "MarginwatchInsuranceFundLow",
    "MarginwatchStressScenarioExhaustsFund",
    "MarginwatchWebhookDeliveriesFailing",
    "MarginwatchActionBacklogGrowing",
    "Watchdog",
}


def tool(name: str, package: str) -> str:
    """The path of ``name``; a missing tool fails the test (it is never skipped)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it (apt-get install -y {package})")
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@cache
def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def rule_id(rule: dict[str, Any]) -> str:
    return f"{rule['alert']}-{rule.get('labels', {}).get('severity')}"


def alert_names() -> list[str]:
    return sorted({rule["alert"] for rule in alert_rules()})


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", markdown, flags=re.MULTILINE):
        text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_promtool_checks_the_rules() -> None:
    """``promtool check rules`` accepts the rule file."""
    result = run(tool("promtool", "prometheus"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    """``promtool test rules`` passes every test file under tests/rules/."""
    assert RULE_TESTS, "no promtool test files under tests/rules/"
    result = run(tool("promtool", "prometheus"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_load_the_deployed_rule_file() -> None:
    """Every test file tests deploy/prometheus/rules/marginwatch.yml itself."""
    for path in RULE_TESTS:
        files = {(path.parent / name).resolve() for name in load(path)["rule_files"]}
        assert files == {RULES}, path.name


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    """Each alert has a test case where it fires and one where it does not."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alert_names())
    assert names - firing == set(), "never tested firing"
    assert names - quiet == set(), "never tested not firing"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_the_required_alerts_exist() -> None:
    """Every alert an operator relies on is defined."""
    assert REQUIRED_ALERTS - set(alert_names()) == set()


@pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
def test_alert_has_duration_severity_and_annotations(rule: dict[str, Any]) -> None:
    """A ``for`` duration, a severity, a summary, a description and a runbook URL."""
    assert DURATION.match(str(rule.get("for", ""))), "for: missing or not a duration"
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"annotation {key} missing"


@pytest.mark.parametrize("rule", alert_rules(), ids=rule_id)
def test_runbook_url_is_absolute_and_points_to_a_section_of_the_operations_doc(
    rule: dict[str, Any],
) -> None:
    """runbook_url is an absolute https URL of docs/operations.md, anchored at the alert's name
    in lower case, a heading there (a link that works from Slack or PagerDuty)."""
    url = urlsplit(rule["annotations"]["runbook_url"])
    assert (url.scheme, bool(url.netloc)) == ("https", True), url.geturl()
    assert url.path.endswith("/docs/operations.md"), url.geturl()
    assert url.fragment == rule["alert"].lower()
    assert url.fragment in github_anchors(OPERATIONS.read_text(encoding="utf-8"))


def test_runbook_urls_share_one_base() -> None:
    """Every alert's runbook URL is the same page but for its anchor: one base to replace."""
    urls = [rule["annotations"]["runbook_url"] for rule in alert_rules()]
    assert len({url.partition("#")[0] for url in urls}) == 1, urls


def test_alertmanager_config_is_valid() -> None:
    """``amtool check-config`` accepts deploy/alertmanager/alertmanager.yml."""
    amtool = tool("amtool", "prometheus-alertmanager")
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ("alertname=MarginwatchLiquidationSurge severity=critical", "pager"),
        ("alertname=MarginwatchMarginCallSurge severity=warning", "chat"),
        ("alertname=SomethingElse severity=info", "null"),
        ("alertname=Watchdog severity=info", "deadmans-switch"),
        ("alertname=SomethingElse", "chat"),
    ],
)
def test_alertmanager_routes_by_severity(labels: str, receiver: str) -> None:
    """Critical pages, warning goes to chat, info nowhere; the watchdog to the dead man's switch."""
    amtool = tool("amtool", "prometheus-alertmanager")
    config = f"--config.file={ALERTMANAGER_CONFIG}"
    result = run(amtool, "config", "routes", "test", config, *labels.split())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_every_alert_severity_has_a_route() -> None:
    """Each severity used by a rule has its own route in the Alertmanager configuration."""
    routes = load(ALERTMANAGER_CONFIG)["route"]["routes"]
    routed = {m.split("=")[1].strip().strip('"') for r in routes for m in r.get("matchers", [])}
    assert {rule["labels"]["severity"] for rule in alert_rules()} <= routed

"""The Grafana dashboard and the Prometheus alerts under deploy/ stand on what /metrics exports.

Every query is parsed as PromQL; every metric and label it names must be in a real scrape of
the API (real Redis). The alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), each alert has a test that fires it and one that does not, and a
runbook section in docs/operations.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import keys
from tests.unit.test_api_support import make_harness

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dispatcher.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

TARGET_LABELS = {"instance", "job"}
"""Labels Prometheus adds to every scraped series."""
GRAFANA_INTERVALS = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")
LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


@pytest.fixture(scope="module")
def exported(redis_url: str) -> Iterator[dict[str, set[str]]]:
    """Each sample name of a real /metrics scrape, with the label names it carries.

    The labelled counters of the stats hash get a field each, so they have samples too.
    """
    api = make_harness(redis_url)
    seeded = {"provider:429": 1, "rejected:undecodable": 1, "attempt:easemob:count": 1}
    try:
        for field, amount in seeded.items():
            api.redis.hincrby(keys.counters_shard().stats, field, amount)
        response = api.http.get("/metrics")
    finally:
        for field, amount in seeded.items():
            api.redis.hincrby(keys.counters_shard().stats, field, -amount)
        api.close()
    assert response.status_code == 200
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    yield names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's interval variables made concrete) of every target."""
    return [
        (panel["title"], GRAFANA_INTERVALS.sub("5m", target["expr"]))
        for panel in panels()
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def problems_of(query: str, exported: dict[str, set[str]]) -> list[str]:
    """What in ``query`` /metrics does not export: metrics, and labels matched or grouped by."""
    try:
        expr = promql_parser.parse(query)
    except ValueError as exc:
        return [f"not PromQL: {exc}"]
    problems: list[str] = []
    selected: list[tuple[promql_parser.AggregateExpr, set[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            selected.append((node, set()))
        if not isinstance(node, promql_parser.VectorSelector):
            return
        if node.name is None:
            problems.append(f"a selector without a metric name: {node}")
            return
        if node.name not in exported:
            problems.append(f"{node.name} is not exported")
            return
        labels = exported[node.name] | TARGET_LABELS
        for matcher in node.matchers.matchers:
            if matcher.name not in labels:
                problems.append(f"{node.name} has no label {matcher.name!r}")
        for _, inner in selected:
            inner.update(labels)

    def leave(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            aggregate, labels = selected.pop()
            for label in aggregate.modifier.labels if aggregate.modifier else []:
                if label not in labels:
                    problems.append(f"grouped by {label!r}, which no metric inside has")

    promql_parser.walk(expr, pre_visit=visit, post_visit=leave)
    return problems


# ---------------------------------------------------------------------------
# The dashboard


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    used = "\n".join(t["expr"] for p in panels() for t in p["targets"])
    for name in re.findall(r"\$(\w+)", GRAFANA_INTERVALS.sub("", used)):
        assert name in variables, f"${name} is used but not defined"
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_panels_tile_the_24_column_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_dashboard_query_names_metrics_and_labels_that_metrics_exports(
    exported: dict[str, set[str]],
) -> None:
    problems = [
        f"{title}: {problem}  [{query}]"
        for title, query in dashboard_queries()
        for problem in problems_of(query, exported)
    ]
    assert not problems, "\n".join(problems)


def test_dashboard_variables_list_label_values_that_metrics_exports(
    exported: dict[str, set[str]],
) -> None:
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = LABEL_VALUES.match(variable["query"]["query"])
        assert found, variable
        metric, label = found.groups()
        assert label in exported.get(metric, set()), variable["name"]


def test_the_dashboard_shows_what_operators_watch() -> None:
    """Throughput, latency, retries, 429s, dead letters, backlog age, per client, Redis memory."""
    used = "\n".join(query for _, query in dashboard_queries())
    for needed in (
        "sum by (client) (rate(dispatcher_accepted_total",
        "dispatcher_delivered_total",
        "histogram_quantile(0.99, max by (le) (rate(dispatcher_delivery_latency_seconds_bucket",
        "max by (le, channel) (rate(dispatcher_attempt_duration_seconds_bucket",
        "dispatcher_retries_total",
        'dispatcher_provider_errors_total{status="429"}',
        "dispatcher_dead_total",
        "dispatcher_dead_letters",
        "dispatcher_queue_oldest_age_seconds",
        "dispatcher_queue_depth",
        "dispatcher_redis_memory_used_bytes",
    ):
        assert needed in used, needed


# ---------------------------------------------------------------------------
# The alerts


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: install Debian's 'prometheus' package")
    return subprocess.run(
        ["promtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    for rule in alert_rules():
        own = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in own), f"no test fires {rule['alert']}"
        assert any(not c["exp_alerts"] for c in own), f"no test keeps {rule['alert']} quiet"


def test_alert_expressions_name_metrics_and_labels_that_metrics_exports(
    exported: dict[str, set[str]],
) -> None:
    problems = [
        f"{rule['alert']}: {problem}"
        for rule in alert_rules()
        for problem in problems_of(rule["expr"], exported)
    ]
    assert not problems, "\n".join(problems)


def test_every_alert_has_a_runbook_section_its_annotation_points_to() -> None:
    headings = re.findall(r"^### (\w+)$", OPERATIONS.read_text(), flags=re.MULTILINE)
    for rule in alert_rules():
        name = rule["alert"]
        assert name in headings, f"docs/operations.md has no '### {name}'"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert rule["labels"]["severity"] in ("warning", "critical")

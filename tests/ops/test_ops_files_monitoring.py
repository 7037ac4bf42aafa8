"""The monitoring files, checked without a running stack: the Prometheus rules go through
promtool (check and unit tests); the dashboards are checked for titles, units and
datasources. Their queries are run for real in test_observability.py.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.ops import compose, grafana
from tests.ops.stack import OPS, require_tool

ROOT = compose.ROOT


# --- Prometheus rules ------------------------------------------------------------------


def test_promtool_check_rules_is_clean() -> None:
    """`promtool check rules ops/prometheus/alerts.yml` succeeds."""
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(OPS / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    """Each alert fires on the series of its incident and stays quiet on a look-alike (promtool test rules)."""
    result = subprocess.run(
        [require_tool("promtool"), "test", "rules", str(OPS / "alerts_test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load((OPS / "alerts_test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    rules = {
        r["alert"]
        for g in yaml.safe_load((OPS / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    assert tested == rules


def test_promtool_check_config_is_clean() -> None:
    """`promtool check config` accepts the compose Prometheus configuration and its rule file."""
    result = subprocess.run(
        [require_tool("promtool"), "check", "config", str(OPS / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_and_runbook_in_the_docs() -> None:
    """Each alert has a severity, a summary, a description and a runbook line whose section exists in docs/operations.md."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    for group in yaml.safe_load((OPS / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            notes = rule["annotations"]
            assert {"summary", "description", "runbook"} <= set(notes), rule["alert"]
            assert f"docs/operations.md#{rule['alert'].lower()}" in notes["runbook"]
            assert f"### {rule['alert']}" in doc, (
                f"docs/operations.md has no runbook for {rule['alert']}"
            )


# --- Grafana ---------------------------------------------------------------------------


def test_provisioning_has_fixed_uids_and_points_at_the_mounted_dashboards(
    project: compose.Project,
) -> None:
    """Datasources have fixed uids (Prometheus and PostgreSQL); the dashboards provider reads the mounted folder."""
    uids = grafana.datasource_uids()
    assert sorted(uids.values()) == sorted([grafana.PROMETHEUS, grafana.POSTGRES])
    providers = yaml.safe_load((grafana.PROVISIONING / "dashboards" / "smsrx.yml").read_text())[
        "providers"
    ]
    mounts = {t: s for (s, t, _) in compose.bind_mounts(project.services["grafana"])}
    assert mounts[providers[0]["options"]["path"]] == "./grafana/dashboards"
    env = compose.environment(project.services["grafana"])
    for path in (grafana.PROVISIONING / "datasources").glob("*.yml"):
        for var in re.findall(r"\$\{(\w+)\}", path.read_text()):
            assert var in env, f"{path.name} needs {var} in grafana's environment"


def test_dashboards_are_the_three_and_well_formed() -> None:
    """Ingestion, Delivery and Pipeline health, each with a fixed uid, unique panel ids and a title."""
    boards = grafana.dashboards()
    assert set(boards) == {"ingestion", "delivery", "pipeline-health"}
    assert len({b["uid"] for b in boards.values()}) == 3
    for name, board in boards.items():
        assert board["title"] and board["schemaVersion"] >= 36, name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name


@pytest.mark.parametrize("panel", list(grafana.panels()), ids=lambda p: p.id)
def test_panel_has_title_unit_and_a_provisioned_datasource(panel: grafana.Panel) -> None:
    """A title, a unit (or value mappings that name each state), and a provisioned datasource for each query."""
    uids = grafana.datasource_uids()
    assert len(panel.title) > 8 and panel.raw.get("description")
    defaults = panel.raw["fieldConfig"]["defaults"]
    assert panel.unit and (panel.unit != "none" or defaults.get("mappings")), panel.id
    assert uids.get(panel.raw["datasource"]["uid"]) == panel.datasource_type
    for target in panel.targets:
        assert uids.get(target["datasource"]["uid"]) == target["datasource"]["type"]
        if panel.datasource_type == grafana.PROMETHEUS:
            assert target["expr"].strip()
        else:
            assert target["rawSql"].strip() and target["format"] in {"table", "time_series"}


def test_required_panels_are_present() -> None:
    """The panels the operations issue asks for are on the right dashboards."""
    titles = {
        name: " | ".join(p.title for p in grafana.panels() if p.dashboard == name).lower()
        for name in grafana.dashboards()
    }
    for name, words in {
        "ingestion": [
            "per second, by provider and outcome",
            "p50, p95, p99",
            "refusals",
            "duplicate rate",
            "publish latency",
            "503",
        ],
        "delivery": [
            "delivery rate, by provider and country",
            "by status",
            "since submission",
            "since the first receipt",
            "without a final status",
            "expired",
            "inbound",
            "suppressed numbers",
            "opt-outs and opt-ins per minute, by keyword",
            "opt-outs and opt-ins per minute, by provider",
            "opt-outs and opt-ins per minute, by country",
            "routed per second, by route",
            "opt-out checks per second, by answer",
            "delivery rate, by provider",
            "by source (push / poll)",
            "unmapped carrier statuses, by provider and value",
        ],
        "pipeline-health": [
            "consumer lag",
            "processed per second",
            "errors",
            "orange subscription",
            "processes up",
            "rows deleted per day, by table",
            "oldest row age in days, by table",
            "status polls per second, by provider and outcome",
            "status poll latency (p95)",
            "pending and due for a poll",
            "most overdue poll",
            "waiting for the rate limit",
            "poll credentials accepted",
        ],
    }.items():
        for word in words:
            assert word in titles[name], f"{name}: no panel about {word!r}"


def test_no_panel_is_pinned_to_one_provider() -> None:
    """Panels cover every provider: a query may follow $provider, never name one provider."""
    for panel in grafana.panels():
        for target in panel.targets:
            query = target.get("expr") or target.get("rawSql", "")
            assert not re.search(r"provider\s*(=|!=|<>)\s*['\"]", query), (panel.id, query)


def test_sql_macros_expand_like_grafana() -> None:
    """The check expands $__timeFilter and $__timeGroupAlias to the SQL Grafana's PostgreSQL datasource sends."""
    from datetime import UTC, datetime

    start, end = datetime(2026, 3, 2, 9, 0, tzinfo=UTC), datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert grafana.sql(
        "SELECT $__timeGroupAlias(minute, '5m') WHERE $__timeFilter(minute)", start, end
    ) == (
        'SELECT floor(extract(epoch from minute)/300)*300 AS "time" '
        "WHERE minute BETWEEN '2026-03-02T09:00:00Z' AND '2026-03-02T10:00:00Z'"
    )
    with pytest.raises(ValueError, match="unixEpochFilter"):
        grafana.sql("WHERE $__unixEpochFilter(t)", start, end)

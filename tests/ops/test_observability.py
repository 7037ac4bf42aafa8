"""Every Grafana panel and every alert, evaluated against a real Prometheus scraping `smsrx dev`.

One run (tests/ops/check.py) starts the embedded stack, sends real carrier traffic
through it and lets a real Prometheus scrape every process; the tests then ask that
Prometheus, and the real PostgreSQL, the exact queries the dashboards and rules hold.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ops import grafana
from tests.ops.check import Observation, observe, render_ingestion
from tests.ops.stack import JOBS, OPS, PromQLError, finite_values, require_tool
from tests.ops.traffic import OPTOUT_CHECK, ORANGE_DR, VAVASMS_MO

pytestmark = pytest.mark.timeout(420)

PANELS = list(grafana.panels())
ALERTS = [
    rule
    for group in yaml.safe_load((OPS / "alerts.yml").read_text())["groups"]
    for rule in group["rules"]
]
_METRIC = re.compile(r"\b(?:smsrx|process)_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observation]:
    """The stack after the traffic, with Prometheus still scraping it."""
    require_tool("prometheus")
    observation = observe(tmp_path_factory.mktemp("ops"))
    yield observation
    observation.stop()


def exported_names(obs: Observation) -> set[str]:
    """Every metric name the processes expose, samples and declared families alike."""
    names = set()
    for text in obs.exposition.values():
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                names.add(name)
                if kind == "histogram":
                    names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
                if kind == "counter" and not name.endswith("_total"):
                    names.add(f"{name}_total")
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_traffic_got_every_kind_of_answer(obs: Observation) -> None:
    """Receipts and inbound SMS were accepted, and refusals, bad bodies and 503s (the stall) happened; no 500; opt-out checks were answered."""
    answers = obs.report.answers
    assert answers[(ORANGE_DR, 200)] > 50 and answers[(VAVASMS_MO, 200)] > 20, answers
    assert answers[(OPTOUT_CHECK, 200)] > 20 and answers[(OPTOUT_CHECK, 400)] > 0, answers
    assert {200, 400, 403, 413, 415, 503} <= obs.report.statuses(), answers
    assert [key for key in answers if key[1] >= 500 and key[1] != 503] == [], answers
    assert obs.report.submissions > 20


def test_poller_polled_both_fake_status_apis(obs: Observation) -> None:
    """The Gateway SMS and VavaSMS sends were polled: both fakes answered the poller, which never refused credentials or went past the fake's limits."""
    assert obs.report.polled_submissions["gatewaysms"] >= 3, obs.report.polled_submissions
    assert obs.report.polled_submissions["vavasms"] >= 3, obs.report.polled_submissions
    for fake in (obs.carriers.gateway, obs.carriers.vava):
        answered = [r.status for r in list(fake.requests)]
        assert answered and set(answered) <= {0, 200}, answered


def test_prometheus_scrapes_every_process(obs: Observation) -> None:
    """Prometheus scrapes the receiver, the three workers, the reconciler, the prune and the poller, with the compose job names."""
    targets = obs.prometheus.api("targets")["activeTargets"]
    assert {t["labels"]["job"] for t in targets} == {
        "smsrx-receiver",
        "smsrx-status-projection",
        "smsrx-analytics",
        "smsrx-subscriptions",
        "smsrx-inbound",
        "smsrx-prune",
        "smsrx-poller",
    }
    assert all(t["health"] == "up" for t in targets), targets


@pytest.mark.parametrize("process", list(JOBS))
def test_promtool_check_metrics_is_clean(obs: Observation, process: str) -> None:
    """`promtool check metrics` finds nothing to say about the process's /metrics output."""
    promtool = require_tool("promtool")
    text = obs.exposition[process]
    assert "smsrx_build_info{" in text and "process_cpu_seconds_total" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("panel", PANELS, ids=[p.id for p in PANELS])
def test_panel_returns_data(obs: Observation, panel: grafana.Panel) -> None:
    """The panel's queries parse, and return data over the observed window."""
    assert panel.targets, "a panel without a query"
    if panel.datasource_type == grafana.PROMETHEUS:
        found = []
        for target in panel.targets:
            try:
                found += finite_values(obs.query_range(target["expr"]))
            except PromQLError as exc:
                pytest.fail(f"{target['refId']}: {obs.prom(target['expr'])}\n{exc}")
        assert found, f"no data: {[obs.prom(t['expr']) for t in panel.targets]}"
    else:
        for target in panel.targets:
            rows = obs.sql(target["rawSql"])
            assert rows, f"no rows: {target['rawSql']}"
            assert any(value is not None for row in rows for value in row.values())
            if target["format"] == "time_series":
                assert {"time", "metric", "value"} <= set(rows[0].keys())


@pytest.mark.parametrize(
    "dashboard,name,query", list(grafana.variable_queries()), ids=lambda v: str(v)
)
def test_template_variable_has_values(
    obs: Observation, dashboard: str, name: str, query: str
) -> None:
    """Each `label_values(metric, label)` variable lists values from the real series."""
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
    assert match, query
    metric, label = match.groups()
    values = obs.prometheus.api(f"label/{label}/values", **{"match[]": metric})
    assert values, f"{dashboard} ${name}: {query}"


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_alert_expression_evaluates(obs: Observation, rule: dict[str, str]) -> None:
    """The alert's expression parses and evaluates on the real series."""
    try:
        obs.prometheus.query(rule["expr"], at=obs.end)
    except PromQLError as exc:
        pytest.fail(f"{rule['alert']}: {exc}")
    assert {"summary", "description", "runbook"} <= set(rule["annotations"])


def test_prometheus_loaded_every_rule_and_none_failed(obs: Observation) -> None:
    """Prometheus loaded alerts.yml and every rule evaluated without error."""
    rules = [r for g in obs.prometheus.api("rules")["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in ALERTS)
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_broker_stall_made_the_503_alert_pending(obs: Observation) -> None:
    """The 503s answered while the broker was stalled put SmsrxReceiverUnavailable in pending."""
    alerts = obs.prometheus.api("alerts")["alerts"]
    states = {a["labels"]["alertname"]: a["state"] for a in alerts}
    assert states.get("SmsrxReceiverUnavailable") in {"pending", "firing"}, states


def test_queries_name_only_exported_metrics(obs: Observation) -> None:
    """Every metric a panel or an alert names is exported by some process."""
    exported = exported_names(obs)
    texts = [rule["expr"] for rule in ALERTS]
    texts += [t.get("expr", "") for p in PANELS for t in p.targets]
    texts += [q for _, _, q in grafana.variable_queries()]
    missing = {name for text in texts for name in _METRIC.findall(text)} - exported
    assert missing == set()


def test_ingestion_dashboard_renders_to_png(obs: Observation, tmp_path: Path) -> None:
    """The Ingestion dashboard's queries draw a PNG (the README's picture is made the same way)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("matplotlib draws the PNG: pip install matplotlib")
    path = tmp_path / "ingestion.png"
    series = render_ingestion(obs, path)
    assert series >= 10
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

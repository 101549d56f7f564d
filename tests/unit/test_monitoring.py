"""The dashboard, the alert rules and the docs name only metrics that exist, and the docs name all of raydio's.

promtool checks the rules themselves (`make test-monitoring`); the integration test runs every query
against a live Prometheus.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import yaml

from services.config import Settings
from services.telemetry import metrics

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "deploy" / "helm" / "raydio" / "files"
DOC = (ROOT / "docs" / "observability.md").read_text()
FACTORIES = (metrics.ingress_metrics, metrics.model_metrics, metrics.chat_metrics, metrics.gpu_metrics,
             metrics.job_metrics, metrics.auth_metrics)


def _exported_names() -> dict[str, set[str]]:
    """Every name Prometheus sees for each raydio metric: ray_ prefix, _total for counters, histogram series."""
    names = {}
    for factory in FACTORIES:
        for field in dataclasses.fields(group := factory()):
            metric = getattr(group, field.name)
            base = f"ray_{metric._name}"
            kind = type(metric).__name__
            names[base] = ({f"{base}_total"} if kind == "Counter" else
                           {base, f"{base}_bucket", f"{base}_sum", f"{base}_count"} if kind == "Histogram" else {base})
    return names


def _referenced(text: str) -> set[str]:
    return set(re.findall(r"\bray_raydio_[a-z_]+\b", text))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((FILES / "raydio-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load((FILES / "raydio-alerts.rules.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_dashboard_and_alerts_use_only_metrics_raydio_records():
    exported = set().union(*_exported_names().values())
    for source, exprs in (("dashboard", _dashboard_exprs()), ("alerts", _rule_exprs())):
        unknown = set().union(*(_referenced(e) for e in exprs)) - exported
        assert not unknown, f"the {source} uses metrics nothing records: {unknown}"


def test_docs_list_every_metric_with_its_type():
    for base, names in _exported_names().items():
        shown = base + "_total" if f"{base}_total" in names else base
        assert f"| `{shown}` |" in DOC, f"docs/observability.md does not list {shown}"
    for name in _referenced(DOC):
        assert any(name in names for names in _exported_names().values()), f"the docs name {name}, which nothing records"


def test_label_sets_are_bounded():
    for base, _ in _exported_names().items():
        assert base.startswith("ray_raydio_")
    for factory in FACTORIES:
        for field in dataclasses.fields(group := factory()):
            tags = set(getattr(group, field.name)._tag_keys)
            assert tags <= {"route", "method", "status", "model", "outcome", "finish_reason", "gpu", "state", "kind",
                            "reason"}, tags
            assert "path" not in tags and "request_id" not in tags


def test_dashboard_is_well_formed():
    dashboard = json.loads((FILES / "raydio-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "application", "route", "model"}
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("requests per second", "latency p50 / p95 / p99", "error", "batch size", "queue depth",
                  "healthy replicas", "time to first token", "gpu", "jobs by state", "authentication"):
        assert topic in titles, f"no panel about {topic}"
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and panel.get("description")
    # Panels on one row never overlap.
    cells = set()
    for panel in panels:
        pos = panel["gridPos"]
        cell = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & cell, panel["title"]
        cells |= cell


def test_every_alert_is_unit_tested_and_documented():
    tests = yaml.safe_load((ROOT / "deploy" / "monitoring" / "tests" / "raydio-alerts.test.yaml").read_text())
    assert tests["rule_files"] == ["../../helm/raydio/files/raydio-alerts.rules.yaml"]
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if not case["exp_alerts"]}
    rules = yaml.safe_load((FILES / "raydio-alerts.rules.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts == tested == quiet, (alerts, tested, quiet)
    for alert in alerts:
        assert f"`{alert}`" in DOC


def test_the_scrape_config_targets_the_default_metrics_port():
    config = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"127.0.0.1:{Settings.model_fields['metrics_port'].default}"]
    assert (ROOT / "deploy" / "monitoring" / config["rule_files"][0]).resolve() == FILES / "raydio-alerts.rules.yaml"

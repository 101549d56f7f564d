"""Metrics: a real Prometheus scrapes the stack's Ray metrics port; raydio's series exist, are labelled and move."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.support.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "helm" / "raydio" / "files" / "raydio-alerts.rules.yaml"
DASHBOARD = ROOT / "deploy" / "helm" / "raydio" / "files" / "raydio-dashboard.json"
pytestmark = pytest.mark.requires_prometheus

TOO_LONG = " ".join(["word"] * 400)  # over the embedder's 256-token window: a 400 from the replica


@pytest.fixture(scope="module")
def prometheus(stack):
    server = PrometheusServer([f"127.0.0.1:{stack.metrics_port}"], rule_files=[RULES])
    try:
        server.wait_until('sum(up{job="ray"})', lambda v: v == 1, timeout_s=30)
        yield server
    finally:
        server.close()


def _series(prometheus: PrometheusServer, expr: str) -> dict[frozenset, float]:
    """Each series under ``sum(...)`` by its labels: a replica killed by an earlier test (test_jobs) leaves series
    that Ray stops exporting a while later, and their disappearance must not read as a decrease."""
    inner = expr.removeprefix("sum(").removesuffix(")")
    return {frozenset(r["metric"].items()): r["value"] for r in prometheus.query(inner)}


def _settled(prometheus: PrometheusServer, exprs: dict[str, str]) -> dict[str, dict]:
    """Current series once they stop changing, so earlier tests' traffic still in Ray's export pipeline is not counted."""
    previous = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = {key: _series(prometheus, expr) for key, expr in exprs.items()}
        if current == previous:
            return current
        previous = current
        time.sleep(2.5)
    raise AssertionError(f"metrics kept changing: {previous}")


def _increase(prometheus: PrometheusServer, expr: str, before: dict[frozenset, float]) -> float:
    """How much the series alive now grew since ``before`` (a new series counts from 0)."""
    return sum(value - before.get(labels, 0.0) for labels, value in _series(prometheus, expr).items())


def _expect_increase(prometheus: PrometheusServer, exprs: dict[str, str], before: dict[str, dict],
                     expected: dict[str, float]) -> None:
    deadline = time.monotonic() + 60
    reached = {}
    for key, increase in expected.items():
        while (grown := _increase(prometheus, exprs[key], before[key])) < increase - 1e-9:
            assert time.monotonic() < deadline, f"{exprs[key]} grew by {grown}"
            time.sleep(0.5)
        reached[key] = grown
    time.sleep(2.5)  # and no more than that: two further exports
    # The larger of the two reads: on a loaded machine Ray's agent has been seen to re-export an older sample once.
    after = {key: round(max(reached[key], _increase(prometheus, exprs[key], before[key])), 6) for key in expected}
    assert after == expected


def test_http_model_and_batch_metrics_move_by_exactly_the_traffic_sent(prometheus, base_url, auth_headers):
    exprs = {
        "http_ok": 'sum(ray_raydio_http_requests_total{route="/v1/embeddings", method="POST", status="200"})',
        "http_bad": 'sum(ray_raydio_http_requests_total{route="/v1/embeddings", method="POST", status="400"})',
        "http_ok_seconds_count": 'sum(ray_raydio_http_request_duration_seconds_count{route="/v1/embeddings", status="200"})',
        "model_ok": 'sum(ray_raydio_model_requests_total{model="embedder", method="embed", outcome="ok"})',
        "model_invalid": 'sum(ray_raydio_model_requests_total{model="embedder", method="embed", outcome="invalid"})',
        "model_ok_seconds_count": 'sum(ray_raydio_model_request_duration_seconds_count{model="embedder", outcome="ok"})',
        "inputs": 'sum(ray_raydio_model_inputs_total{model="embedder", deployment="embedder"})',
        "forward_passes": 'sum(ray_raydio_model_forward_duration_seconds_count{model="embedder"})',
        "passes_by_inputs": 'sum(ray_raydio_model_batch_inputs_count{model="embedder"})',
        "serve_batches": 'sum(ray_serve_actual_batch_size_count{deployment="embedder"})',
    }
    before = _settled(prometheus, exprs)

    async def traffic() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=auth_headers) as client:
            ok = [client.post("/v1/embeddings", json={"input": [f"metric {i}", "two inputs"]}) for i in range(16)]
            bad = [client.post("/v1/embeddings", json={"input": [TOO_LONG]}) for _ in range(3)]
            return await asyncio.gather(*ok, *bad)

    statuses = sorted(r.status_code for r in asyncio.run(traffic()))
    assert statuses == [200] * 16 + [400] * 3
    _expect_increase(prometheus, exprs, before, {
        "http_ok": 16, "http_bad": 3, "http_ok_seconds_count": 16, "model_ok": 16, "model_invalid": 3,
        "model_ok_seconds_count": 16, "inputs": 32,
    })
    grown = {key: _increase(prometheus, expr, before[key]) for key, expr in exprs.items()}
    passes = grown["forward_passes"]
    assert 1 <= passes < 16, f"16 concurrent requests took {passes} forward passes: they were not batched"
    # Serve's batch histogram and raydio's count the same batches.
    assert grown["passes_by_inputs"] == passes
    assert grown["serve_batches"] == passes


def test_labels_are_bounded_route_templates_with_serve_context(prometheus, http):
    for name in ("digits", "chat", "digits"):
        assert http.get(f"/v1/models/{name}").status_code == 200
    assert http.get("/no/such/page").status_code == 404
    prometheus.wait_until('sum(ray_raydio_http_requests_total{route="/v1/models/{name}", status="200"})', lambda v: v >= 3)
    prometheus.wait_until('sum(ray_raydio_http_requests_total{route="<unmatched>", status="404"})', lambda v: v >= 1)
    routes = {s["metric"]["route"] for s in prometheus.query("ray_raydio_http_requests_total")}
    assert not any("digits" in r or "chat" in r or "no/such" in r for r in routes if r.startswith("/v1/models")), routes
    assert all(r == "<unmatched>" or r.startswith("/") for r in routes), routes
    series = prometheus.query('ray_raydio_model_requests_total{model="digits", method="info"}')[0]["metric"]
    # Serve adds where it was recorded: the ingress replica calls the handle.
    assert series["deployment"] == "ingress" and series["application"] == "raydio" and series["replica"]
    forward = prometheus.query('ray_raydio_model_forward_duration_seconds_count{model="embedder"}')[0]["metric"]
    assert forward["deployment"] == "embedder"


def test_chat_metrics_time_to_first_token_and_tokens(prometheus, http):
    exprs = {
        "ttft": 'sum(ray_raydio_chat_time_to_first_token_seconds_count{model="chat"})',
        "tokens": 'sum(ray_raydio_chat_generated_tokens_total{model="chat", finish_reason="length"})',
        "gaps": 'sum(ray_raydio_chat_time_between_tokens_seconds_count{model="chat"})',
        "prompt": 'sum(ray_raydio_chat_prompt_tokens_total{model="chat"})',
    }
    before = _settled(prometheus, exprs)
    body = {"messages": [{"role": "user", "content": "Count from one to ten."}], "max_tokens": 6, "temperature": 0}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert response.json()["choices"][0]["finish_reason"] == "length" and usage["completion_tokens"] == 6
    _expect_increase(prometheus, exprs, before, {"ttft": 1, "tokens": 6, "prompt": usage["prompt_tokens"]})
    assert 1 <= _increase(prometheus, exprs["gaps"], before["gaps"]) <= 5


def test_serve_metrics_are_scraped_with_them(prometheus):
    healthy = prometheus.wait_until('count(ray_serve_deployment_replica_healthy{application="raydio"} == 1)',
                                    lambda v: v >= 4, timeout_s=30)
    assert healthy >= 4  # ingress, embedder, digits, chat
    for name in ("ray_serve_num_http_requests_total", "ray_serve_deployment_request_counter_total",
                 "ray_serve_replica_processing_queries", "ray_serve_deployment_queued_queries"):
        assert prometheus.query(f'{name}{{application="raydio"}}'), f"{name} is missing"


def test_refusals_by_authentication_are_counted_under_their_route(prometheus, base_url):
    exprs = {
        "failures": 'sum(ray_raydio_auth_failures_total{reason="unauthenticated"})',
        "http_401": 'sum(ray_raydio_http_requests_total{route="/v1/models/{name}", method="GET", status="401"})',
    }
    before = _settled(prometheus, exprs)
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        assert httpx.get(f"{base_url}/v1/models/digits", headers=headers, timeout=30).status_code == 401
    _expect_increase(prometheus, exprs, before, {"failures": 2, "http_401": 2})


def test_the_job_runner_reports_jobs_by_state(prometheus):
    prometheus.wait_until('count(ray_raydio_jobs{deployment="jobs"})', lambda v: v == 5, timeout_s=30)
    states = {s["metric"]["state"] for s in prometheus.query("ray_raydio_jobs")}
    assert states == {"queued", "running", "succeeded", "failed", "cancelled"}


def test_alert_rules_load_and_evaluate_against_the_live_metrics(prometheus):
    deadline = time.monotonic() + 30
    while True:
        groups = prometheus._client.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("lastEvaluation", "").startswith("2") and not rule["lastEvaluation"].startswith("0001")
                         for rule in rules):
            break
        assert time.monotonic() < deadline, "rules were not evaluated"
        time.sleep(1)
    assert {rule["health"] for rule in rules} == {"ok"}, [(r["name"], r.get("lastError")) for r in rules]
    assert len(rules) >= 5


def test_every_dashboard_query_is_valid_promql_and_the_core_panels_have_data(prometheus):
    dashboard = json.loads(DASHBOARD.read_text())
    # GPU panels need CUDA; errors and rejections need failures; queue gauges are only set while requests wait.
    may_be_empty = re.compile(r"GPU|error|reject|queue|autoscaling|job items", re.IGNORECASE)
    panels = [p for p in dashboard["panels"] if p.get("targets")]
    assert len(panels) >= 8
    empty = []
    for panel in panels:
        series = 0
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
                    .replace("$application", ".*").replace("$route", ".*"))
            result = prometheus._client.get("/api/v1/query", params={"query": expr}).json()
            assert result["status"] == "success", (panel["title"], expr, result)
            series += len(result["data"]["result"])
        if not series and not may_be_empty.search(panel["title"]):
            empty.append(panel["title"])
    assert not empty, f"panels without data after traffic: {empty}"

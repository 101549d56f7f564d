"""Request ids, trace context, structured logs and metric labels, in-process (tracing off, as in most deployments)."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from ray import exceptions as ray_exc
from ray.serve.exceptions import BackPressureError

from services.errors import InputTooLarge
from services.telemetry import tracing
from services.telemetry.logs import JsonFormatter, request_id_var
from tests.unit.conftest import LocalHandle, make_client

HEX32 = re.compile(r"^[0-9a-f]{32}$")


class _Recorder:
    """A deployment that remembers the trace carrier each call brought, and can fail like a replica."""

    def __init__(self, exc: BaseException | None = None, delay_s: float = 0) -> None:
        self.carriers: list[dict | None] = []
        self.exc, self.delay_s = exc, delay_s

    async def info(self, *_, trace_carrier=None):
        self.carriers.append(trace_carrier)
        await asyncio.sleep(self.delay_s)
        if self.exc:
            raise self.exc
        return {"model_id": "recorder"}

    embed = info

    async def embed_many(self, requests):  # a coalesced call: it fails or stalls as a whole, as a transport does
        return [await self.info(trace_carrier=carrier) for _, carrier in requests]


class _Observations:
    def __init__(self) -> None:
        self.http: list[tuple] = []
        self.calls: list[tuple] = []

    def observe_http(self, route, method, status, seconds):
        assert seconds >= 0
        self.http.append((route, method, status))

    def observe_model_call(self, model, method, outcome, seconds):
        assert seconds >= 0
        self.calls.append((model, method, outcome))


@pytest.fixture
def observed(monkeypatch) -> _Observations:
    """What the middleware and ModelClient hand to the Prometheus metrics (the labels under test)."""
    observations = _Observations()
    monkeypatch.setattr("services.ingress.observability.ingress_metrics", lambda: observations)
    monkeypatch.setattr("services.core.client.ingress_metrics", lambda: observations)
    return observations


def test_every_response_carries_a_request_id_and_a_trace_id(client):
    first, second = client.get("/health/live"), client.get("/health/live")
    for response in (first, second):
        assert HEX32.match(response.headers["X-Request-ID"]) and HEX32.match(response.headers["X-Trace-ID"])
        assert int(response.headers["X-Trace-ID"], 16) != 0
    assert first.headers["X-Trace-ID"] != second.headers["X-Trace-ID"]
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    error = client.post("/v1/embeddings", json={"input": []})
    assert error.status_code == 400 and HEX32.match(error.headers["X-Trace-ID"])


@pytest.mark.parametrize(("sent", "kept"), [
    ("order-42/retry:1", True),
    ("x" * 128, True),
    ("x" * 129, False),
    ("with space", False),
    ("new\\nline", False),
])
def test_an_incoming_request_id_is_honoured_when_it_is_safe_to_log(client, sent, kept):
    returned = client.get("/health/live", headers={"X-Request-ID": sent}).headers["X-Request-ID"]
    assert (returned == sent) is kept
    if not kept:
        assert HEX32.match(returned)


def test_the_trace_context_crosses_into_the_replica_with_the_call(unit_settings):
    recorder = _Recorder()
    with make_client({"embedder": LocalHandle(recorder)}, unit_settings) as client:
        incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        response = client.get("/v1/models/embedder", headers={"traceparent": incoming})
        assert response.status_code == 200 and response.headers["X-Trace-ID"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        version, trace_id, _span_id, _flags = recorder.carriers[-1]["traceparent"].split("-")
        assert (version, trace_id) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736")
        # Without one, the replica still gets the trace id the client sees (tracing off: nothing is exported).
        response = client.get("/v1/models/embedder")
        assert recorder.carriers[-1]["traceparent"].split("-")[1] == response.headers["X-Trace-ID"]


def test_a_malformed_traceparent_starts_a_new_trace(client):
    response = client.get("/health/live", headers={"traceparent": "00-zz-00f067aa0ba902b7-01"})
    assert HEX32.match(response.headers["X-Trace-ID"]) and response.headers["X-Trace-ID"] != "0" * 32


def test_http_metrics_use_route_templates_never_raw_paths(client, observed):
    client.get("/v1/models/digits")
    client.get("/v1/models/not-a-model")
    client.get("/no/such/page")
    client.delete("/v1/embeddings")
    client.post("/v1/embeddings", content=b"x" * (65 * 1024), headers={"content-type": "application/json"})
    client.request("BREW", "/health/live")
    assert observed.http == [
        ("/v1/models/{name}", "GET", 200),
        ("/v1/models/{name}", "GET", 404),
        ("<unmatched>", "GET", 404),
        ("/v1/embeddings", "DELETE", 405),
        ("/v1/embeddings", "POST", 413),  # refused by the body limit before routing, still under its route
        ("/health/live", "BREW", 405),  # the metric maps unknown methods to OTHER
    ]


def test_routes_inside_a_mounted_app_are_prefixed_with_the_mount():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from services.ingress.observability import RequestTelemetry

    inner = FastAPI()

    @inner.get("/items/{item}")
    def item(item: str) -> dict:
        return {"item": item}

    outer = FastAPI()
    outer.mount("/ui/shop", inner)
    seen = _Observations()
    outer.add_middleware(RequestTelemetry)
    import services.ingress.observability as observability

    original = observability.ingress_metrics
    observability.ingress_metrics = lambda: seen
    try:
        assert TestClient(outer).get("/ui/shop/items/42").json() == {"item": "42"}
    finally:
        observability.ingress_metrics = original
    assert seen.http == [("/ui/shop/items/{item}", "GET", 200)]


@pytest.mark.parametrize(("exc", "delay_s", "outcome"), [
    (None, 0, "ok"),
    (BackPressureError(num_queued_requests=8, max_queued_requests=8), 0, "rejected"),
    (ray_exc.RayActorError(), 0, "unavailable"),
    (ray_exc.RayTaskError("embed", "tb", InputTooLarge("too many", "input")).as_instanceof_cause(), 0, "invalid"),
    (ray_exc.RayTaskError("embed", "tb", RuntimeError("CUDA error")).as_instanceof_cause(), 0, "unavailable"),
    (None, 2, "timeout"),
])
def test_model_calls_are_counted_by_outcome(observed, unit_settings, exc, delay_s, outcome):
    with make_client({"embedder": LocalHandle(_Recorder(exc, delay_s))}, unit_settings, timeout_s=0.5) as client:
        client.post("/v1/embeddings", json={"input": "hello"})
    assert observed.calls == [("embedder", "embed", outcome)]


def test_log_lines_are_json_with_the_request_and_trace_ids():
    formatter = JsonFormatter("ingress")
    token = request_id_var.set("req-7")
    try:
        with tracing.attached(tracing.root_context({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})):
            try:
                raise ValueError("boom")
            except ValueError:
                record = logging.LogRecord("services.x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
                record.exc_info = __import__("sys").exc_info()
                record.http_status = 500
                line = json.loads(formatter.format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "failed here" and line["level"] == "ERROR" and line["component"] == "ingress"
    assert line["request_id"] == "req-7" and line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["span_id"] == "00f067aa0ba902b7" and line["http_status"] == 500
    assert "ValueError: boom" in line["exception"] and line["ts"].endswith("Z")
    # Outside a request there are no ids, and no nulls either.
    assert set(json.loads(formatter.format(logging.LogRecord("services.x", 20, __file__, 1, "idle", (), None)))) == {
        "ts", "level", "logger", "message", "component"}


@pytest.mark.parametrize(("environ", "requested"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_tracing_is_on_only_when_an_otlp_endpoint_is_configured(environ, requested):
    assert tracing.tracing_requested(environ) is requested


def test_tracing_off_installs_no_tracer_provider():
    from opentelemetry import trace

    assert not tracing.tracing_enabled()
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"  # the API's no-op
    assert not tracing.tracer().start_span("x").is_recording()


def test_requests_refused_by_authentication_are_counted_under_their_route(observed, core, unit_settings, monkeypatch):
    from fastapi.testclient import TestClient

    from services.config import IngressArgs
    from services.ingress.app import build_ingress_app

    failures = []
    monkeypatch.setattr("services.ingress.auth.auth_metrics", lambda: type("M", (), {"failures": type("C", (), {
        "inc": staticmethod(lambda tags: failures.append(tags["reason"]))})})())
    app = build_ingress_app(core, IngressArgs(mount_ui=False), unit_settings)  # authentication on, the default
    with TestClient(app, raise_server_exceptions=False) as client:
        missing = client.get("/v1/models/digits")
        wrong = client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    assert HEX32.match(missing.headers["X-Trace-ID"]) and HEX32.match(wrong.headers["X-Request-ID"])
    assert observed.http == [("/v1/models/{name}", "GET", 401), ("/v1/embeddings", "POST", 401)]
    assert failures == ["unauthenticated", "unauthenticated"]

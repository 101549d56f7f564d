"""Traces: one request through the real Serve stack yields one trace, ingress → handle → replica → batch → forward."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def _by_name(spans) -> dict:
    named = {}
    for span in spans:
        assert span.name not in named, f"two spans named {span.name}: {spans}"
        named[span.name] = span
    return named


def _assert_child(child, parent) -> None:
    assert child.trace_id == parent.trace_id
    assert child.parent_span_id == parent.span_id, f"{child.name} is not a child of {parent.name}"
    assert parent.start_ns <= child.start_ns and child.end_ns <= parent.end_ns + 1_000_000, (child, parent)


def test_one_embeddings_request_is_one_trace_from_ingress_to_forward_pass(http, otlp_sink):
    response = http.post("/v1/embeddings", json={"input": ["trace me"]}, headers={"X-Request-ID": "trace-test-1"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-test-1"
    trace_id = response.headers["X-Trace-ID"]
    assert len(trace_id) == 32 and int(trace_id, 16) != 0
    names = {"POST /v1/embeddings", "fastapi.endpoint", "embedder.embed call", "embedder.embed", "embedder.batch",
             "embedder.forward"}
    spans = otlp_sink.wait_for(trace_id, names)
    named = _by_name(spans)
    assert names <= set(named), sorted(named)

    # The HTTP server span is FastAPI's own; raydio adds the request id to it.
    root = named["POST /v1/embeddings"]
    assert root.parent_span_id is None and root.kind == Span.SPAN_KIND_SERVER
    assert root.attributes["http.route"] == "/v1/embeddings" and root.attributes["http.response.status_code"] == 200
    assert root.attributes["raydio.request_id"] == "trace-test-1"
    assert root.resource["raydio.component"] == "ingress" and root.resource["service.name"] == "raydio"
    endpoint = named["fastapi.endpoint"]
    _assert_child(endpoint, root)
    call = named["embedder.embed call"]
    _assert_child(call, endpoint)
    assert call.kind == Span.SPAN_KIND_CLIENT and call.attributes["raydio.outcome"] == "ok"
    replica = named["embedder.embed"]
    _assert_child(replica, call)
    assert replica.kind == Span.SPAN_KIND_SERVER and replica.resource["raydio.component"] == "embedder"
    assert replica.resource["process.pid"] != root.resource["process.pid"], "the replica span must come from the replica"
    batch = named["embedder.batch"]
    _assert_child(batch, replica)
    assert batch.attributes["raydio.batch.requests"] == 1 and batch.attributes["raydio.batch.inputs"] == 1
    _assert_child(named["embedder.forward"], batch)
    assert {s.resource["raydio.component"] for s in spans} == {"ingress", "embedder"}


def test_an_incoming_traceparent_is_continued(http, otlp_sink):
    parent_trace, parent_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = http.get("/v1/models/digits", headers={"traceparent": f"00-{parent_trace}-{parent_span}-01"})
    assert response.status_code == 200 and response.headers["X-Trace-ID"] == parent_trace
    named = _by_name(otlp_sink.wait_for(parent_trace, {"GET /v1/models/{name}", "digits.info call", "digits.info"}))
    assert named["GET /v1/models/{name}"].parent_span_id == parent_span
    _assert_child(named["digits.info"], named["digits.info call"])


def test_a_replica_error_marks_the_spans_failed(http, otlp_sink):
    response = http.post("/v1/digits/classify", json={"pixels": [[99] * 8] * 8})
    assert response.status_code == 400
    named = _by_name(otlp_sink.wait_for(response.headers["X-Trace-ID"], {"digits.predict call", "digits.predict"}))
    assert named["digits.predict call"].attributes["raydio.outcome"] == "invalid"
    assert named["digits.predict call"].status_code == 2 and named["digits.predict"].status_code == 2  # ERROR


def test_requests_batched_together_each_see_the_batch_and_share_one_forward_pass(base_url, auth_headers, otlp_sink):
    async def send(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=auth_headers) as client:
            return await asyncio.gather(*(client.post("/v1/embeddings", json={"input": [f"batch {i}"]}) for i in range(n)))

    responses = asyncio.run(send(24))
    assert all(r.status_code == 200 for r in responses)
    traces = [r.headers["X-Trace-ID"] for r in responses]
    assert len(set(traces)) == 24
    batches = {}
    for trace_id in traces:
        named = _by_name(otlp_sink.wait_for(trace_id, {"embedder.batch"}))
        _assert_child(named["embedder.batch"], named["embedder.embed"])
        batches[trace_id] = named["embedder.batch"]
    forwards = [s for t in traces for s in otlp_sink.trace(t) if s.name == "embedder.forward"]
    # One forward span per batch: a child of its first request's batch span, linked to the others' batch spans.
    covered = []
    for forward in forwards:
        parent = next(b for b in batches.values() if b.span_id == forward.parent_span_id)
        assert len(forward.links) + 1 == parent.attributes["raydio.batch.requests"] == forward.attributes["raydio.batch.requests"]
        covered += [parent.span_id, *forward.links]
    assert sorted(covered) == sorted(b.span_id for b in batches.values())
    assert any(len(f.links) > 0 for f in forwards), "no request was batched with another"
    assert sum(f.attributes["raydio.batch.inputs"] for f in forwards) == 24


def test_a_chat_stream_is_one_trace(http, otlp_sink):
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and json.loads(events[1][6:])["object"] == "chat.completion.chunk"
    named = _by_name(otlp_sink.wait_for(response.headers["X-Trace-ID"], {
        "POST /v1/chat/completions", "chat.generate call", "chat.generate", "chat.forward"}))
    call = named["chat.generate call"]
    assert call.trace_id == named["POST /v1/chat/completions"].trace_id and call.attributes["raydio.outcome"] == "ok"
    _assert_child(named["chat.generate"], call)
    _assert_child(named["chat.forward"], named["chat.generate"])
    assert named["chat.forward"].attributes["raydio.completion_tokens"] == 4
    assert named["chat.forward"].attributes["raydio.finish_reason"] == "length"


def test_logs_are_json_lines_with_the_request_and_trace_ids(http):
    import ray

    response = http.post("/v1/digits/classify", json={"pixels": [0] * 64}, headers={"X-Request-ID": "log-test-1"})
    assert response.status_code == 200
    logs_dir = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [json.loads(line) for path in logs_dir.glob("worker-*") for line in path.read_text(errors="replace").splitlines()
                 if '"log-test-1"' in line and line.startswith("{")]
        if lines:
            break
        time.sleep(0.5)
    access = [line for line in lines if line.get("http_status") == 200]
    assert access, f"no JSON access log line for the request in {logs_dir}"
    assert access[0]["trace_id"] == response.headers["X-Trace-ID"] and access[0]["request_id"] == "log-test-1"
    assert access[0]["component"] == "ingress" and access[0]["message"] == "POST /v1/{name}/classify 200"

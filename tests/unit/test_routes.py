"""The REST routes over the real deployment classes and models, with Ray's handles stood in for."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from ray import exceptions as ray_exc
from ray.serve.exceptions import BackPressureError

from tests.conftest import digit_png
from tests.unit.conftest import make_client


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code, error
    return error


# --- index, health, models -----------------------------------------------------------------------

def test_index_is_json_for_clients_and_html_for_browsers(client):
    body = client.get("/", headers={"Accept": "application/json"}).json()
    assert [m["name"] for m in body["models"]] == ["embedder", "digits", "chat"]
    assert all(m["ready"] for m in body["models"])
    assert body["models"][0]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert body["api"]["docs"] == "/docs"
    html = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*"})
    assert html.headers["content-type"].startswith("text/html")
    assert "SmolLM2-135M-Instruct" in html.text and "/docs" in html.text


def test_health(client):
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["models"] == {name: {"ready": True} for name in ("embedder", "digits", "chat")}


def test_models_list_is_openai_shaped(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {"embedder", "digits", "chat"}
    assert cards["chat"]["root"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert all(card["ready"] and card["object"] == "model" for card in cards.values())
    assert client.get("/v1/models/digits").json()["root"] == "raydio/digits-cnn-8x8"
    _error(client.get("/v1/models/gpt-4"), 404, "model_not_found")


# --- embeddings ----------------------------------------------------------------------------------

def test_embeddings_for_a_string_and_a_list(client):
    one = client.post("/v1/embeddings", json={"model": "embedder", "input": "hello world"}).json()
    assert len(one["data"]) == 1 and len(one["data"][0]["embedding"]) == 384
    assert one["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    many = client.post("/v1/embeddings", json={"input": ["hello world", "hello world hello world"]}).json()
    assert [d["index"] for d in many["data"]] == [0, 1]
    assert many["usage"]["prompt_tokens"] == 10
    np.testing.assert_allclose(many["data"][0]["embedding"], one["data"][0]["embedding"], atol=1e-5)


def test_embeddings_base64_matches_float(client):
    floats = client.post("/v1/embeddings", json={"input": "a cat"}).json()["data"][0]["embedding"]
    encoded = client.post("/v1/embeddings", json={"input": "a cat", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, floats, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        ({"input": []}, 400, "invalid_request", "at least one"),
        ({"input": ""}, 400, "invalid_request", "empty"),
        ({"input": ["ok", "  "]}, 400, "invalid_request", "item 1 is empty"),
        ({"input": 42}, 400, "invalid_request", "input"),
        ({"input": [1, 2, 3]}, 400, "invalid_request", "input"),
        ({}, 400, "invalid_request", "input: Field required"),
        ({"input": "x", "model": "text-embedding-3-small"}, 404, "model_not_found", "Models for embeddings: embedder."),
        ({"input": "x", "dimensions": 1536}, 400, "invalid_request", "384"),
        ({"input": "x", "encoding_format": "int8"}, 400, "invalid_request", "encoding_format"),
        ({"input": "x", "temperature": 1}, 400, "invalid_request", "temperature: unknown field"),
        ({"input": ["x"] * 9}, 400, "input_too_large", "At most 8"),
        ({"input": "word " * 400}, 400, "input_too_large", "at most 256"),
    ],
)
def test_embeddings_bad_input(client, body, status, code, needle):
    assert needle in _error(client.post("/v1/embeddings", json=body), status, code)["message"]


def test_malformed_json_is_a_400(client):
    response = client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    _error(response, 400, "invalid_request")


def test_oversized_body_is_a_413(client):
    response = client.post("/v1/embeddings", json={"input": "x" * 70_000})
    assert "exceeds the limit" in _error(response, 413, "payload_too_large")["message"]


# --- chat ----------------------------------------------------------------------------------------

def _chat(**extra) -> dict:
    return {"model": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0, **extra}


def test_chat_completion(client):
    body = client.post("/v1/chat/completions", json=_chat(max_tokens=16)).json()
    assert body["object"] == "chat.completion"
    assert "Paris" in body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_stops_at_max_tokens(client):
    body = client.post("/v1/chat/completions", json=_chat(
        messages=[{"role": "user", "content": "Tell me a long story about dragons."}], max_tokens=5)).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def _events(response) -> list:
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] for line in lines]


def test_chat_streaming_sends_chunks_then_done(client):
    response = client.post("/v1/chat/completions", json=_chat(max_tokens=16, stream=True,
                                                                stream_options={"include_usage": True}))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "Paris" in "".join(filter(None, contents))
    assert sum(1 for c in contents if c) >= 2  # token by token, not one blob
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert len({c["id"] for c in chunks}) == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        (_chat(max_tokens=65), 400, "input_too_large", "at most 64"),
        (_chat(max_tokens=0), 400, "invalid_request", "max_tokens"),
        (_chat(temperature=3), 400, "invalid_request", "temperature"),
        (_chat(top_p=0), 400, "invalid_request", "top_p"),
        (_chat(n=2), 400, "invalid_request", "n:"),
        (_chat(stop=["a", "b", "c", "d", "e"]), 400, "invalid_request", "at most 4"),
        (_chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice={"type": "function", "function": {"name": "g"}}),
         400, "invalid_request", "must name a declared tool"),
        (_chat(frobnicate=1), 400, "invalid_request", "frobnicate: unknown field"),
        (_chat(messages=[]), 400, "invalid_request", "messages"),
        (_chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "invalid_request", "role"),
        (_chat(messages=[{"role": "user", "content": "word " * 3000}]), 400, "input_too_large", "prompt has"),
        (_chat(messages=[{"role": "user", "content": "hi"}] * 65), 400, "input_too_large", "messages"),
        (_chat(model="gpt-4o"), 404, "model_not_found", "Models for chat completions: chat."),
    ],
)
def test_chat_bad_input(client, body, status, code, needle):
    assert needle in _error(client.post("/v1/chat/completions", json=body), status, code)["message"]


# --- digits --------------------------------------------------------------------------------------

def test_digits_from_pixels(client, sklearn_digits):
    grids = sklearn_digits.images[:4].tolist()
    body = client.post("/v1/digits/classify", json={"pixels": grids}).json()
    assert [p["label"] for p in body["predictions"]] == sklearn_digits.target[:4].tolist()
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 for p in body["predictions"])
    single = client.post("/v1/digits/classify", json={"pixels": grids[0]}).json()
    flat = client.post("/v1/digits/classify", json={"pixels": sum(grids[0], [])}).json()
    assert single["predictions"][0]["label"] == flat["predictions"][0]["label"] == sklearn_digits.target[0]


def test_digits_from_an_uploaded_image(client, sklearn_digits):
    png = digit_png(sklearn_digits.images[3], size=300)
    body = client.post("/v1/digits/classify-image", files={"file": ("three.png", png, "image/png")}).json()
    prediction = body["predictions"][0]
    assert prediction["label"] == sklearn_digits.target[3]
    assert np.asarray(prediction["pixels"]).shape == (8, 8)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"pixels": [1, 2, 3]}, "shape [3]"),
        ({"pixels": [[1, 2], [3]]}, "rectangular"),
        ({"pixels": [[99] * 8] * 8}, "between 0 and 16"),
        ({"pixels": [[-1] * 8] * 8}, "between 0 and 16"),
        ({"pixels": "zero"}, "pixels"),
        ({"pixels": [[[0] * 8] * 8] * 5}, "At most 4"),
        ({"pixels": []}, "pixels"),
    ],
)
def test_digits_bad_pixels(client, body, needle):
    assert needle in _error(client.post("/v1/digits/classify", json=body), 400)["message"]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [(b"", "empty"), (b"not an image at all", "not a readable"), (None, "no visible digit")],
)
def test_digits_bad_images(client, payload, needle):
    if payload is None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (50, 50), "white").save(buffer, format="PNG")
        payload = buffer.getvalue()
    response = client.post("/v1/digits/classify-image", files={"file": ("x.png", payload, "image/png")})
    assert needle in _error(response, 400)["message"]


def test_digits_image_missing_file_is_a_400(client):
    assert "file" in _error(client.post("/v1/digits/classify-image"), 400)["message"]


# --- failures of the model side -------------------------------------------------------------------

class _Failing:
    """A deployment that fails or stalls; like the real ones it accepts the trace carrier."""

    def __init__(self, exc: BaseException | None = None, delay_s: float = 0):
        self.exc, self.delay_s = exc, delay_s

    async def info(self, *_, trace_carrier=None):
        await asyncio.sleep(self.delay_s)
        if self.exc:
            raise self.exc
        return {"model_id": "slow"}

    embed = info

    async def embed_many(self, requests):  # a coalesced call: it fails or stalls as a whole, as a transport does
        return [await self.info(trace_carrier=carrier) for _, carrier in requests]


@pytest.mark.parametrize(
    ("exc", "status", "needle"),
    [
        (BackPressureError(num_queued_requests=8, max_queued_requests=8), 503, "at capacity"),
        (ray_exc.RayActorError(), 503, "replica is unavailable"),
        (ray_exc.RayTaskError("embed", "Traceback", RuntimeError("CUDA error")).as_instanceof_cause(), 503, "failed"),
    ],
)
def test_replica_failures_are_503_with_retry_after(exc, status, needle, unit_settings):
    from tests.unit.conftest import LocalHandle

    with make_client({"embedder": LocalHandle(_Failing(exc))}, unit_settings) as client:
        response = client.post("/v1/embeddings", json={"input": "hello"})
        error = _error(response, status, "model_unavailable")
        assert needle in error["message"] and "embedder" in error["message"]
        assert "CUDA" not in error["message"]  # internals stay in the log
        assert int(response.headers["Retry-After"]) >= 1
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["models"]["embedder"]["ready"] is False


def test_a_model_that_does_not_answer_in_time_is_a_504(unit_settings):
    from tests.unit.conftest import LocalHandle

    with make_client({"embedder": LocalHandle(_Failing(delay_s=5))}, unit_settings, timeout_s=0.2) as client:
        assert "did not answer in time" in _error(client.post("/v1/embeddings", json={"input": "x"}), 504)["message"]


def test_openapi_documents_schemas_examples_and_errors(client):
    spec = client.get("/openapi.json").json()
    embeddings = spec["paths"]["/v1/embeddings"]["post"]
    assert {"200", "400", "404", "503"} <= set(embeddings["responses"])
    assert "ErrorResponse" in json.dumps(embeddings["responses"]["400"])
    assert spec["components"]["schemas"]["EmbeddingRequest"]["examples"]
    assert {"/v1/{name}/classify-image", "/v1/{name}/classify", "/v1/models/{name}:predict"} <= set(spec["paths"])


def test_every_operation_is_documented_for_generated_clients(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    assert len(operations) >= 15
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary") and op.get("description"), f"{where}: no summary/description"
        errors = [code for code in op["responses"] if code[0] in "45"]
        assert errors, f"{where}: no error responses"
        for code in errors:
            assert op["responses"][code].get("description"), f"{where} {code}: undescribed"
            assert "schema" in json.dumps(op["responses"][code]), f"{where} {code}: no body schema"
        body = op.get("requestBody")
        if body is None:
            continue
        for media_type, content in body["content"].items():
            schema = content["schema"]
            if media_type == "application/json":
                resolved = schemas[schema["$ref"].split("/")[-1]] if "$ref" in schema else schema
                assert resolved.get("examples") or content.get("example") or content.get("examples"), \
                    f"{where}: request body has no example"
            elif media_type == "multipart/form-data":
                form = schemas[schema["$ref"].split("/")[-1]]
                assert all(p.get("description") for p in form["properties"].values()), f"{where}: undescribed form field"
    v2_errors = spec["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["400"]
    assert v2_errors["content"]["application/json"]["schema"]["$ref"].endswith("/V2Error")


def test_openai_client_fields_at_neutral_values_are_accepted(client):
    neutral = dict(presence_penalty=0, frequency_penalty=0.0, logit_bias={}, logprobs=False, top_logprobs=0,
                   response_format={"type": "text"}, tools=[], tool_choice="none", parallel_tool_calls=True, store=False,
                   modalities=["text"], service_tier="auto", user="u-1", safety_identifier="s-1", metadata={"k": "v"},
                   stop=["\n\n"], n=1, max_completion_tokens=4, seed=3, stream_options=None)
    body = client.post("/v1/chat/completions", json=_chat(**neutral))
    assert body.status_code == 200, body.text
    assert body.json()["usage"]["completion_tokens"] <= 4


def test_seed_makes_sampling_repeatable(client):
    request = _chat(messages=[{"role": "user", "content": "Write a word."}], temperature=1.5, max_tokens=8, seed=11)
    first, second = (client.post("/v1/chat/completions", json=request).json() for _ in range(2))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


@pytest.mark.parametrize(("field", "value"), [
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("logit_bias", {"50256": -100}), ("logprobs", True),
    ("top_logprobs", 2), ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}),
    ("tools", [{"type": "function", "function": {"name": "get weather"}}]), ("tool_choice", "required"),
    ("store", True), ("modalities", ["text", "audio"]), ("service_tier", "flex"),
])
def test_openai_fields_that_cannot_be_honoured_are_400_naming_the_field(client, field, value):
    error = _error(client.post("/v1/chat/completions", json=_chat(**{field: value})), 400, "invalid_request")
    assert error["param"] == field and field in error["message"]


# --- chat sessions -------------------------------------------------------------------------------

def test_a_session_is_continued_and_appended_to(client):
    session = client.post("/v1/sessions", json={"title": "trip"}).json()
    assert session["object"] == "chat.session" and session["title"] == "trip"
    first = client.post("/v1/chat/completions", json=_chat(
        messages=[{"role": "user", "content": "My name is Zed."}], max_tokens=8, session_id=session["id"])).json()
    second = client.post("/v1/chat/completions", json=_chat(
        messages=[{"role": "user", "content": "What is my name?"}], max_tokens=8, session_id=session["id"], stream=True))
    assert _events(second)[-1] == "[DONE]"
    stored = client.get(f"/v1/sessions/{session['id']}").json()
    roles = [m["role"] for m in stored["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert stored["messages"][0]["content"] == "My name is Zed."
    assert stored["messages"][1]["content"] == first["choices"][0]["message"]["content"]
    assert stored["messages"][1]["tokens"] == first["usage"]["completion_tokens"]
    assert all(m["tokens"] > 0 for m in stored["messages"])
    # the history was sent: the second prompt holds the first turn
    third = client.post("/v1/chat/completions", json=_chat(
        messages=[{"role": "user", "content": "Thanks."}], max_tokens=1, session_id=session["id"])).json()
    lone = client.post("/v1/chat/completions", json=_chat(messages=[{"role": "user", "content": "Thanks."}], max_tokens=1)).json()
    assert third["usage"]["prompt_tokens"] > lone["usage"]["prompt_tokens"] + sum(m["tokens"] for m in stored["messages"])
    assert session["id"] in [s["id"] for s in client.get("/v1/sessions").json()]
    assert client.delete(f"/v1/sessions/{session['id']}").status_code == 204
    _error(client.get(f"/v1/sessions/{session['id']}"), 404, "not_found")
    _error(client.post("/v1/chat/completions", json=_chat(session_id=session["id"])), 404)
    _error(client.post("/v1/sessions", json={"title": "x", "colour": "red"}), 400)


# --- agents --------------------------------------------------------------------------------------

def test_agents_are_created_at_runtime_and_used_at_once(client):
    created = client.post("/v1/agents", json={"name": "pirate", "system_prompt": "You are a pirate. Say arr.",
                                               "temperature": 0, "max_tokens": 6})
    assert created.status_code == 201
    assert created.json()["ui_url"] == "/ui/chat/?agent=pirate"
    assert "pirate" in [a["name"] for a in client.get("/v1/agents").json()]
    plain = client.post("/v1/chat/completions", json=_chat(messages=[{"role": "user", "content": "Hello"}])).json()
    agent = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}],
                                                       "agent": "pirate"}).json()
    # the agent's system prompt replaced the default one, and its max_tokens applied
    assert agent["usage"]["prompt_tokens"] != plain["usage"]["prompt_tokens"]
    assert agent["usage"]["completion_tokens"] <= 6
    session = client.post("/v1/sessions", json={"agent": "pirate"}).json()
    assert session["agent"] == "pirate"
    _error(client.post("/v1/agents", json={"name": "pirate", "system_prompt": "again", "max_tokens": 8}), 409, "conflict")
    _error(client.post("/v1/agents", json={"name": "parrot", "system_prompt": "x", "max_tokens": 100}), 400, "input_too_large")
    _error(client.post("/v1/agents", json={"name": "Bad Name!", "system_prompt": "x"}), 400)
    _error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "agent": "ghost"}), 404)
    _error(client.get("/v1/agents/ghost"), 404)

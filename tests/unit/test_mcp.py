"""The MCP endpoint mounted in the ingress, over HTTP (JSON-RPC on streamable HTTP), with the real models.

The official ``mcp`` client drives the same endpoint through Serve in tests/integration/test_clients.py.
"""

from __future__ import annotations

import base64
import itertools
import json

import numpy as np
import pytest

from tests.conftest import digit_png

_ids = itertools.count(1)
ACCEPT = {"Accept": "application/json, text/event-stream"}


def _rpc(client, method: str, params: dict | None = None, headers: dict | None = None) -> dict:
    response = client.post("/mcp/", json={"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params or {}},
                           headers={**ACCEPT, **(headers or {})})
    assert response.status_code == 200, response.text
    data = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    message = json.loads(data[-1]) if data else response.json()
    assert "error" not in message, message
    return message["result"]


def _call(client, tool: str, **arguments) -> dict:
    return _rpc(client, "tools/call", {"name": tool, "arguments": arguments})


def _ok(result: dict) -> dict:
    assert not result.get("isError"), result
    return result["structuredContent"]


def _tool_error(result: dict, needle: str) -> None:
    assert result["isError"] is True, result
    assert needle in result["content"][0]["text"], result["content"][0]["text"]


def test_tools_are_described_for_an_assistant(client):
    tools = {tool["name"]: tool for tool in _rpc(client, "tools/list")["tools"]}
    # one tool per capability of the catalogue's kinds, each taking a `model` that lists the models serving it
    assert set(tools) == {"list_models", "embed", "rank_by_similarity", "predict", "classify", "classify_image", "chat",
                          "submit_job", "get_job", "list_jobs", "list_pending_actions", "accept_action", "reject_action"}
    for tool in tools.values():
        assert len(tool["description"]) > 40 and tool["title"]
        assert tool["annotations"]["readOnlyHint"] is (tool["name"] not in ("submit_job", "accept_action", "reject_action"))
        assert tool["outputSchema"]["type"] == "object"
        for name, schema in tool["inputSchema"].get("properties", {}).items():
            assert schema.get("description"), f"{tool['name']}.{name} has no description"
    assert "0 (background) to 16 (full ink)" in tools["classify"]["inputSchema"]["properties"]["inputs"]["description"]
    assert "digits: Handwritten digit classifier" in tools["classify"]["inputSchema"]["properties"]["model"]["description"]
    assert "chat:" in tools["chat"]["inputSchema"]["properties"]["model"]["description"]
    assert tools["chat"]["inputSchema"]["required"] == ["prompt"]
    assert "ctx" not in tools["submit_job"]["inputSchema"]["properties"]  # the request context is not an argument
    assert tools["submit_job"]["inputSchema"]["properties"]["kind"]["enum"] == ["embed", "classify", "complete"]


def test_list_models(client):
    models = {m["name"]: m for m in _ok(_call(client, "list_models"))["models"]}
    assert set(models) == {"embedder", "digits", "chat"} and all(m["ready"] for m in models.values())
    assert models["digits"]["kind"] == "torchscript"
    assert {"MCP classify", "MCP classify_image", "POST /v1/digits/classify"} <= set(models["digits"]["routes"])


def test_embed_and_rank(client):
    embedded = _ok(_call(client, "embed", texts=["hello world", "a cat"]))
    vectors = np.asarray(embedded["embeddings"])
    assert vectors.shape == (2, 384) and embedded["dimensions"] == 384 and embedded["tokens"] == [4, 4]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    ranking = _ok(_call(client, "rank_by_similarity", query="Someone is making music.",
                        texts=["Cats sleep in the sun.", "A man plays the guitar.", "Stocks fell."]))["ranking"]
    assert [r["index"] for r in ranking][0] == 1 and ranking[0]["score"] > ranking[-1]["score"]


def test_classify_digit_grid_and_image(client, sklearn_digits):
    result = _ok(_call(client, "classify", inputs=sklearn_digits.images[4].tolist()))
    grid = result["predictions"][0]
    assert result["model"] == "digits" and grid["class_name"] == str(sklearn_digits.target[4])
    assert grid["label"] == sklearn_digits.target[4] and grid["confidence"] == max(grid["probabilities"])
    png = base64.b64encode(digit_png(sklearn_digits.images[6], size=200)).decode()
    image = _ok(_call(client, "classify_image", image_base64=f"data:image/png;base64,{png}"))
    assert image["label"] == sklearn_digits.target[6] and np.asarray(image["pixels"]).shape == (8, 8)


def test_chat(client):
    answer = _ok(_call(client, "chat", prompt="What is the capital of France?", max_tokens=12, temperature=0))
    assert "Paris" in answer["text"]
    assert 0 < answer["completion_tokens"] <= 12 and answer["prompt_tokens"] > 5


def test_jobs_are_submitted_read_and_listed_for_the_caller(client):
    # Stored like POST /v1/jobs (the runner deployment, absent here, would pick it up).
    job = _ok(_call(client, "submit_job", kind="complete", inputs=["Say hi.", "Say bye."], max_tokens=8))
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 2} and job["kind"] == "complete"
    read = _ok(_call(client, "get_job", job_id=job["id"]))
    assert read["id"] == job["id"] and read["results"] is None
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]  # the same job through REST
    listed = _ok(_call(client, "list_jobs"))["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"  # leave no work for other tests


@pytest.mark.parametrize(("tool", "arguments", "needle"), [
    ("submit_job", {"kind": "classify", "inputs": ["not a grid"]}, "Invalid job"),
    ("submit_job", {"kind": "embed", "inputs": [[[0] * 8] * 8]}, "Invalid job"),
    ("submit_job", {"kind": "complete", "inputs": ["hi"], "max_tokens": 65}, "at most 64"),
    ("submit_job", {"kind": "translate", "inputs": ["hi"]}, "kind"),
    ("get_job", {"job_id": "job_nope"}, "No job"),
    ("classify", {"inputs": [[0] * 8] * 7}, "pixels"),
    ("classify", {"inputs": [[17] * 8] * 8}, "between 0 and 16"),
    ("classify", {"inputs": [[1] * 8] * 8, "model": "chat"}, "not a classifier"),
    ("classify_image", {"image_base64": "not base64!"}, "not valid base64"),
    ("classify_image", {"image_base64": base64.b64encode(b"GIF89a").decode()}, "not a readable"),
    ("predict", {"inputs": {"pixels": [[[0] * 8] * 8]}, "model": "embedder"}, "Models for tensor inference: digits"),
    ("embed", {"texts": []}, "texts"),
    ("embed", {"texts": ["word " * 400]}, "at most 256"),
    ("chat", {"prompt": "hi", "max_tokens": 65}, "at most 64"),
    ("chat", {"prompt": "word " * 3000}, "prompt has"),
    ("no_such_tool", {}, "no_such_tool"),
])
def test_bad_arguments_are_tool_errors_the_assistant_can_read(client, tool, arguments, needle):
    _tool_error(_call(client, tool, **arguments), needle)


def test_foreign_hosts_are_refused(client):
    # DNS-rebinding protection: only the configured Host headers are answered.
    response = client.post("/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                           headers={**ACCEPT, "Host": "evil.example"})
    assert response.status_code == 421

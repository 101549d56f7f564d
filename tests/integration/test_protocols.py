"""Open Inference Protocol with the unmodified tritonclient, and MCP with the official mcp client, through Serve."""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import asynccontextmanager
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from mcp import Client as McpClient
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from tritonclient.utils import InferenceServerException

from tests.conftest import digit_png


def test_triton_without_a_key_is_refused_with_the_protocols_error(base_url):
    with triton.InferenceServerClient(url=urlparse(base_url).netloc) as client:
        assert client.is_server_live()  # probes stay open
        with pytest.raises(InferenceServerException, match="Missing credentials") as error:
            client.get_model_metadata("digits")
        assert error.value.status() == "401"


def test_triton_health_and_metadata(triton_client):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits") and triton_client.is_model_ready("embedder", model_version="1")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    metadata = triton_client.get_model_metadata("digits")
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert not triton_client.is_model_ready("resnet")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_digits(triton_client, sklearn_digits, binary):
    images = sklearn_digits.images[:16].astype(np.float32)
    pixels = triton.InferInput("pixels", list(images.shape), "FP32")
    pixels.set_data_from_numpy(images, binary_data=binary)
    outputs = [triton.InferRequestedOutput("label", binary_data=binary),
               triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)]
    result = triton_client.infer("digits", [pixels], outputs=outputs, request_id="r-1")
    assert result.as_numpy("label").tolist() == sklearn_digits.target[:16].tolist()
    top = result.as_numpy("probabilities")
    assert top.shape == (16, 2)
    first = top[0, 0].decode() if isinstance(top[0, 0], bytes) else top[0, 0]
    assert first.split(":")[1:] == [str(sklearn_digits.target[0])] * 2
    assert result.get_response()["id"] == "r-1"


def test_triton_embedder_with_compression(triton_client):
    texts = np.array([b"A man is playing a guitar.", b"Someone makes music.", "Les impôts ont augmenté.".encode()], dtype=np.object_)
    text = triton.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(texts)  # binary: 4-byte lengths + UTF-8
    result = triton_client.infer("embedder", [text], request_compression_algorithm="gzip",
                                 response_compression_algorithm="deflate")
    vectors = result.as_numpy("embedding")
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert result.as_numpy("tokens").tolist()[0] > 5


def test_triton_errors_carry_the_servers_message(triton_client):
    wrong = triton.InferInput("pixels", [1, 8, 8], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 8, 8)))
    with pytest.raises(InferenceServerException, match="must be FP32, got FP64") as error:
        triton_client.infer("digits", [wrong])
    assert error.value.status() == "400"
    ink = triton.InferInput("pixels", [1, 64], "FP32")
    ink.set_data_from_numpy(np.full((1, 64), 99, dtype=np.float32))
    with pytest.raises(InferenceServerException, match="between 0 and 16"):  # raised in the model replica
        triton_client.infer("digits", [ink])
    with pytest.raises(InferenceServerException, match="no tensor interface") as error:
        triton_client.get_model_metadata("chat")
    assert error.value.status() == "404"


# --- MCP ---------------------------------------------------------------------------------------------

@asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str]):
    """The official client over streamable HTTP, with its own HTTP client carrying the API key."""
    async with (create_mcp_http_client(headers=headers) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        yield session


async def test_mcp_tools_with_the_official_client(base_url, auth_headers, sklearn_digits):
    async with mcp_session(f"{base_url}/mcp/", auth_headers) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"list_models", "embed", "rank_by_similarity", "classify", "classify_image", "predict", "chat"} <= set(tools)
        assert all(tool.description and tool.input_schema["type"] == "object" for tool in tools.values())

        models = (await client.call_tool("list_models", {})).structured_content["models"]
        assert {m["name"]: m["ready"] for m in models if m["name"] in ("embedder", "digits", "chat")} == {
            "embedder": True, "digits": True, "chat": True}

        embedded = (await client.call_tool("embed", {"texts": ["hello", "world"]})).structured_content
        assert np.asarray(embedded["embeddings"]).shape == (2, 384)

        ranked = (await client.call_tool("rank_by_similarity", {
            "query": "Someone is making music.", "texts": ["Taxes rose.", "A man plays the guitar."]})).structured_content
        assert ranked["ranking"][0]["text"] == "A man plays the guitar."

        digit = (await client.call_tool("classify", {"inputs": sklearn_digits.images[3].tolist()})).structured_content
        assert digit["predictions"][0]["label"] == sklearn_digits.target[3]
        png = base64.b64encode(digit_png(sklearn_digits.images[8], size=240)).decode()
        image = (await client.call_tool("classify_image", {"image_base64": png})).structured_content
        assert image["label"] == sklearn_digits.target[8]

        chat = await client.call_tool("chat", {"prompt": "What is the capital of France?", "max_tokens": 12,
                                               "temperature": 0})
        assert not chat.is_error and "Paris" in chat.structured_content["text"]
        assert "Paris" in chat.content[0].text  # unstructured copy for clients that ignore structured content

        refused = await client.call_tool("classify", {"inputs": [[0] * 8] * 8 + [[0] * 8]})
        assert refused.is_error and "pixels" in refused.content[0].text


async def test_mcp_needs_the_api_key_and_follows_the_slash_redirect(base_url, auth_headers):
    async with (create_mcp_http_client(headers=auth_headers) as http,
                streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write),  # 307 to /mcp/
                ClientSession(read, write) as session):
        initialized = await session.initialize()
        assert initialized.server_info.name == "raydio" and "list_models" in initialized.instructions
        result = await session.call_tool("embed", {"texts": ["x" * 5]})
        assert not result.is_error and result.structured_content["dimensions"] == 384
    # Without the key: a 401 on the wire, which the SDK reports as an MCPError inside its task groups.
    raw = httpx.post(f"{base_url}/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                     headers={"Accept": "application/json, text/event-stream"})
    assert raw.status_code == 401 and raw.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(ExceptionGroup) as refused:
        async with McpClient(f"{base_url}/mcp/") as client:
            await client.list_tools()
    assert refused.group_contains(MCPError)


async def test_mcp_job_round_trip(base_url, auth_headers, sklearn_digits):
    async with mcp_session(f"{base_url}/mcp/", auth_headers) as client:
        submitted = await client.call_tool("submit_job", {"kind": "classify", "inputs": sklearn_digits.images[:6].tolist()})
        assert not submitted.is_error, submitted.content
        job_id = submitted.structured_content["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = (await client.call_tool("get_job", {"job_id": job_id})).structured_content
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            await asyncio.sleep(0.5)
        assert job["status"] == "succeeded", job
        assert [r["label"] for r in job["results"]] == sklearn_digits.target[:6].tolist()
        listed = (await client.call_tool("list_jobs", {})).structured_content["jobs"]
        assert job_id in [j["id"] for j in listed]
    async with httpx.AsyncClient(base_url=base_url, headers=auth_headers) as http:  # the same job through REST
        assert (await http.get(f"/v1/jobs/{job_id}")).json()["status"] == "succeeded"

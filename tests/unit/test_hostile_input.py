"""Hostile input: each gets a clear 4xx that says what was wrong, and the service keeps serving everyone else.

In-process tests use the unit `client` (the real app over the real models). What only a real server shows
(slow clients, oversized headers) runs against uvicorn on 127.0.0.1, on a free port, started here.
docs/reliability.md has the table of these inputs and the status each gets.
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import threading
import time
import zlib

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from services.config import AuthArgs, IngressArgs, LimitsArgs, McpArgs
from services.ingress.app import build_ingress_app


def _error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()["error"]
    return body if isinstance(body, str) else body["message"]


def _still_serving(client) -> None:
    response = client.post("/v1/embeddings", json={"input": "still here"})
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384


# --- JSON bodies ---------------------------------------------------------------------------------------------------

def test_deeply_nested_json_is_a_400(client):
    for depth in (1_000, 30_000):  # 30,000 levels: 60 KB, under the 64 KiB body limit; Python's parser recurses
        body = "[" * depth + "]" * depth
        message = _error(client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"}), 400)
        assert "input" in message or "nests too deeply" in message, message
    _still_serving(client)


def test_very_long_strings_are_refused_by_their_limits(client):
    long = "word " * 12_000  # 60 KB: within the body limit, far beyond every token limit
    assert "tokens" in _error(client.post("/v1/embeddings", json={"input": long}), 400)
    assert "tokens" in _error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": long}]}), 400)
    assert "200" in _error(client.post("/v1/sessions", json={"title": "t" * 5_000}), 400)  # max_length 200
    _still_serving(client)


def test_invalid_utf8_and_raw_control_characters_are_a_400(client):
    for body in (b'{"input": "caf\xe9"}', b'{"input": "\xff\xfe"}', b'{"input": "a\x00b"}'):
        message = _error(client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"}), 400)
        assert "JSON" in message, message
    _still_serving(client)


def test_nul_characters_in_text_are_refused_where_text_is_stored(client):
    """An escaped NUL (\\u0000) is valid JSON, but PostgreSQL cannot store it in text: refuse it before storing."""
    for path, body in (("/v1/sessions", {"title": "a\u0000b"}),
                       ("/v1/agents", {"name": "nul-agent", "system_prompt": "x\u0000y", "max_tokens": 16})):
        assert "NUL character" in _error(client.post(path, json=body), 400), path
    assert client.get("/v1/agents/nul-agent").status_code == 404  # nothing half-stored
    # Text only computed on, or kept in JSON columns (stored escaped), may contain it.
    assert client.post("/v1/embeddings", json={"input": "a\u0000b"}).status_code == 200
    assert client.post("/v1/jobs", json={"kind": "embed", "inputs": ["a\u0000b"]}).status_code == 202


def test_extreme_sampling_parameters_do_not_break_generation(client):
    """Found by the fuzzer: top_p 5e-324 is 0 in float32 and kept no token (NaN probabilities, a 500)."""
    for params in ({"top_p": 5e-324}, {"temperature": 5e-324}, {"temperature": 1e-30, "top_p": 1e-300}):
        response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                               "max_tokens": 2, **params})
        assert response.status_code == 200, (params, response.text[:300])


def test_pixel_values_beyond_float32_are_a_400(client):
    """Found by the fuzzer: 1e300 overflowed the float32 cast (a warning, an error under strict warnings)."""
    grid = [[1e300] * 8 for _ in range(8)]
    assert "finite" in _error(client.post("/v1/digits/classify", json={"pixels": grid}), 400)


# --- uploads ---------------------------------------------------------------------------------------------------------

def _png(width: int, height: int, mode: str = "1", digit: bool = False) -> bytes:
    image = Image.new(mode, (width, height), 255 if digit else 0)
    if digit:  # a dark stroke on white: something the digits model can crop to
        ImageDraw.Draw(image).line([(width // 2, 4), (width // 2, height - 4)], fill=0, width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_png_that_decompresses_to_a_huge_image_is_a_400_before_decoding(client):
    bomb = _png(20_000, 20_000)  # 400 Mpixels; ~50 KB on the wire
    assert len(bomb) < 64 * 1024
    message = _error(client.post("/v1/digits/classify-image", files={"file": ("bomb.png", bomb, "image/png")}), 400)
    assert "400000000 pixels" in message and "too large to decode" in message
    _still_serving(client)


def test_huge_multipart_uploads_are_a_413_and_too_many_parts_a_400(client, core, unit_settings):
    big = b"\x89PNG" + b"\0" * (1024 * 1024)
    assert "limit" in _error(client.post("/v1/digits/classify-image", files={"file": ("big.png", big, "image/png")}), 413)
    # Chunked, so no Content-Length to refuse early: counted while the multipart parser reads it.
    chunks = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n",
              *(b"\0" * 8192 for _ in range(16)))
    response = client.post("/v1/digits/classify-image", content=iter(chunks),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert "limit" in _error(response, 413)
    many = {f"f{i}": "" for i in range(1_100)}  # Starlette parses at most 1,000 fields; needs a larger body limit
    args = IngressArgs(limits=LimitsArgs(max_body_bytes=1024 * 1024), mount_ui=False, auth=AuthArgs(enabled=False))
    with TestClient(build_ingress_app(core, args, unit_settings), raise_server_exceptions=False) as roomy:
        response = roomy.post("/v1/digits/classify-image", data=many, files={"file": ("a.png", _png(32, 32, "L", True))})
        assert "Too many fields" in _error(response, 400)
    _still_serving(client)


def test_path_traversal_in_an_upload_name_is_only_a_name(client, tmp_path):
    """The ingress never writes uploads under their names; a traversal name is a bad image like any other."""
    for name in ("../../../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/shadow", "a\u0000.png"):
        response = client.post("/v1/digits/classify-image", files={"file": (name, b"not an image", "image/png")})
        assert "not a readable PNG or JPEG" in _error(response, 400)
    png = _png(32, 32, "L", digit=True)
    response = client.post("/v1/digits/classify-image", files={"file": ("../../x.png", png, "image/png")})
    assert response.status_code == 200


# --- compressed /v2 bodies -------------------------------------------------------------------------------------------

def test_gzip_and_deflate_bombs_on_v2_are_a_413(client):
    for encoding, bomb in (("gzip", gzip.compress(b"\0" * (40 * 1024 * 1024), 9)),
                           ("deflate", zlib.compress(b" " * (40 * 1024 * 1024), 9))):  # 40 MB from ~40 KB
        assert len(bomb) < 64 * 1024, len(bomb)
        message = _error(client.post("/v2/models/digits/infer", content=bomb, headers={"Content-Encoding": encoding}), 413)
        assert "decompressed body exceeds the limit" in message
    _still_serving(client)


# --- a real server ---------------------------------------------------------------------------------------------------

class _Server:
    def __init__(self, app) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def server(core, unit_settings):
    limits = LimitsArgs(max_body_bytes=64 * 1024)
    args = IngressArgs(limits=limits, mount_ui=False, auth=AuthArgs(enabled=False), mcp=McpArgs(allowed_hosts=("127.0.0.1:*",)))
    with _Server(build_ingress_app(core, args, unit_settings)) as running:
        yield running


def _models(port: int) -> int:
    # /v1/models asks every deployment for its card: a real round trip through the app and the backends.
    return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).status_code


def test_slow_clients_do_not_stop_the_server_answering_others(server):
    """Slowloris: 64 connections that send a request a few bytes at a time, and never finish it."""
    slow = []
    try:
        for i in range(64):
            sock = socket.create_connection(("127.0.0.1", server.port))
            if i % 2:  # headers that never end
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            else:  # a body that never arrives
                sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 50000\r\n\r\n{\"input\": \"")
            slow.append(sock)
        for _ in range(3):
            for sock in slow:
                sock.sendall(b"a")
            assert _models(server.port) == 200
    finally:
        for sock in slow:
            sock.close()
    assert _models(server.port) == 200


def test_oversized_headers_are_refused_and_the_server_keeps_serving(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        reply = sock.recv(65536)
    # uvicorn (httptools) sets no header limit of its own: the ingress answers 431, naming its limits.
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b"at most 128 headers and 32768 bytes" in reply
    many = {f"x-h{i}": "v" for i in range(200)}
    response = httpx.get(f"http://127.0.0.1:{server.port}/v1/models", headers=many, timeout=30)
    assert "Request headers are too large (20" in _error(response, 431)
    assert _models(server.port) == 200


def test_a_json_body_over_the_limit_is_a_413_over_a_real_connection(server):
    body = json.dumps({"input": "x" * (200 * 1024)})
    response = httpx.post(f"http://127.0.0.1:{server.port}/v1/embeddings", content=body,
                          headers={"content-type": "application/json"}, timeout=30)
    assert "limit of 65536 bytes" in _error(response, 413)
    # Chunked (no Content-Length): counted as it arrives.
    chunks = (b"x" * 8192 for _ in range(32))
    response = httpx.post(f"http://127.0.0.1:{server.port}/v1/embeddings", content=chunks,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert _models(server.port) == 200

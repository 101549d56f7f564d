"""REST through the real Serve proxy, ingress replica and model replicas."""

from __future__ import annotations

import json

import numpy as np

from tests.conftest import digit_png


def test_only_health_answers_without_credentials(base_url):
    import httpx

    with httpx.Client(base_url=base_url, timeout=30) as anonymous:
        assert anonymous.get("/health/ready").status_code == 200
        for path in ("/", "/v1/models", "/docs", "/ui/chat/", "/ui/chat/config"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.post("/v1/embeddings", json={"input": "x"}).status_code == 401
        browser = anonymous.get("/ui/digits/", headers={"Accept": "text/html"})
        assert browser.status_code == 303 and browser.headers["location"].startswith("/login")


def test_index_health_and_models(http):
    index = http.get("/", headers={"Accept": "application/json"}).json()
    # the shipped catalogue plus the two models conftest declares as a user would (test_own_models.py)
    assert {m["name"]: m["ready"] for m in index["models"]} == {"embedder": True, "digits": True, "chat": True,
                                                                "flowers": True, "minilm-second": True}
    assert [u["path"] for u in index["uis"]] == ["/ui/chat/", "/ui/digits/", "/ui/flowers/", "/ui/embeddings/", "/ui/jobs/"]
    assert http.get("/", headers={"Accept": "text/html"}).headers["content-type"].startswith("text/html")
    assert http.get("/health/live").status_code == 200
    assert http.get("/health/ready").json()["status"] == "ready"
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert models["embedder"]["root"] == "sentence-transformers/all-MiniLM-L6-v2" and models["embedder"]["ready"]
    assert http.get("/docs").status_code == 200


def test_embeddings(http):
    body = http.post("/v1/embeddings", json={"input": ["A man plays guitar.", "Someone makes music.", "Taxes rose."]}).json()
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 6


def test_chat_and_streaming(http):
    request = {"model": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "max_tokens": 12, "temperature": 0}
    body = http.post("/v1/chat/completions", json=request).json()
    assert "Paris" in body["choices"][0]["message"]["content"]
    chunks = []
    with http.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    text = "".join(json.loads(c)["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == body["choices"][0]["message"]["content"]  # greedy: streaming and not streaming agree


def test_digits(http, sklearn_digits):
    body = http.post("/v1/digits/classify", json={"pixels": sklearn_digits.images[:8].tolist()}).json()
    assert [p["label"] for p in body["predictions"]] == sklearn_digits.target[:8].tolist()
    image = digit_png(sklearn_digits.images[5], size=400)
    body = http.post("/v1/digits/classify-image", files={"file": ("d.png", image, "image/png")}).json()
    assert body["predictions"][0]["label"] == sklearn_digits.target[5]


def test_bad_input_crosses_the_replica_boundary_as_4xx(http):
    # Raised inside the model replicas, carried back through Ray, answered as 4xx with the replica's message.
    too_long = http.post("/v1/embeddings", json={"input": "word " * 400})
    assert too_long.status_code == 400 and "at most 256" in too_long.json()["error"]["message"]
    prompt = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]})
    assert prompt.status_code == 400 and prompt.json()["error"]["code"] == "input_too_large"
    image = http.post("/v1/digits/classify-image", files={"file": ("x.png", b"\x89PNG broken", "image/png")})
    assert image.status_code == 400 and "not a readable" in image.json()["error"]["message"]
    pixels = http.post("/v1/digits/classify", json={"pixels": [[20] * 8] * 8})
    assert pixels.status_code == 400
    unknown = http.post("/v1/embeddings", json={"input": "x", "model": "ada"})
    assert unknown.status_code == 404
    big = http.post("/v1/embeddings", content=b"x" * (5 * 1024 * 1024), headers={"content-type": "application/json"})
    assert big.status_code == 413

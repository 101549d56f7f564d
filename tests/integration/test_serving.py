"""Serving behaviour: dynamic batching under concurrency, and back-pressure as 503 with Retry-After."""

from __future__ import annotations

import asyncio

import httpx


async def _concurrently(http: httpx.Client, n: int, path: str, body: dict, timeout: float = 120) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=http.base_url, headers=http.headers, timeout=timeout) as client:
        return await asyncio.gather(*(client.post(path, json=body) for _ in range(n)))


def test_concurrent_requests_are_batched(http, app_handle):
    before = app_handle("embedder").info.remote().result()["batch_sizes"]
    responses = asyncio.run(_concurrently(http, 48, "/v1/embeddings", {"input": ["batch me", "and me"]}))
    assert all(r.status_code == 200 for r in responses), [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    after = app_handle("embedder").info.remote().result()["batch_sizes"]
    new = {int(size): count - before.get(size, 0) for size, count in after.items() if count > before.get(size, 0)}
    assert sum(int(size) * count for size, count in new.items()) == 48
    assert max(new) > 1, f"no batch larger than one request: {new}"


def test_digits_batches_too(http, app_handle, sklearn_digits):
    responses = asyncio.run(_concurrently(http, 32, "/v1/digits/classify", {"pixels": sklearn_digits.images[0].tolist()}))
    assert all(r.status_code == 200 for r in responses), [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert max(int(size) for size in app_handle("digits").info.remote().result()["batch_sizes"]) > 1


def test_overload_gives_503_with_retry_after_and_nothing_hangs(http):
    # test.yaml: chat takes 2 at a time and queues 2 more; the rest must be refused at once, not left hanging.
    body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 24, "temperature": 0}
    responses = asyncio.run(_concurrently(http, 10, "/v1/chat/completions", body, timeout=120))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert int(refused.headers["Retry-After"]) >= 1
    assert "at capacity" in refused.json()["error"]["message"]
    # and the stack is healthy again afterwards
    assert http.get("/health/ready").status_code == 200

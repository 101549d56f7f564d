"""Faults under load, the short form of `make chaos`: one SIGKILL per kind of process while requests run.

Each case kills one process of the session's stack (a real crash: SIGKILL by PID, found among this test process's
own Ray descendants), checks that every request under way failed fast and said so (a 502/503 with an error body,
an SSE error event, or a broken connection; never a hang, never a stream that ends as if complete) and waits until
the replacement serves and the stack is ready again, so the tests after these find it healthy. Then cancellation:
a client that goes away stops the work it asked for.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from loadtests import faults
from services.storage.db import session_scope
from services.storage.repositories import KeyRepository
from services.storage.tables import JobItem

pytestmark = pytest.mark.kills

LOAD = {  # the load that exercises each target, kept small: the stack is shared with every other test
    "ingress": {"embed_workers": 2, "digits_workers": 1, "chat_workers": 0},
    "embedder": {"embed_workers": 3, "digits_workers": 0, "chat_workers": 0},
    "digits": {"embed_workers": 0, "digits_workers": 3, "chat_workers": 0},
    "chat": {"embed_workers": 0, "digits_workers": 0, "chat_workers": 2, "chat_tokens": 48},
    "controller": {"embed_workers": 1, "digits_workers": 1, "chat_workers": 0},
}
KINDS = {"ingress": None, "embedder": ("embed",), "digits": ("digits",), "chat": ("chat",), "controller": None}
RECOVERY_S = 240  # a bound for the test, not a measurement (make chaos measures)


@pytest.fixture(scope="module")
def load_headers(http) -> dict[str, str]:
    """A key whose rate limit is far above the load: the faults are under test, not the limiter."""
    with session_scope(os.environ["RAYDIO_DATABASE_URL"]) as session:
        key = KeyRepository.create(session, "faults", ["admin", "inference"], rate_limit_per_minute=1_000_000).secret
    return {"Authorization": f"Bearer {key}"}


def _wait_ready(base_url: str, timeout_s: float = RECOVERY_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the stack was not ready {timeout_s}s after the fault")


async def _kill_under_load(base_url: str, headers: dict, target: str) -> tuple[list[faults.Outcome], bool]:
    """Load, a kill once the load is flowing (chat: once a stream has produced text), until the replacement served;
    returns the requests under way from the kill on, and whether a replacement served."""
    kinds = KINDS[target]
    load = faults.Load(base_url, headers, job_period_s=None, **LOAD[target])
    loader = asyncio.create_task(load.run())
    try:
        deadline = time.monotonic() + 60
        while load.first_success_after(0, kinds) is None or (target == "chat" and load.streams_open == 0):
            assert time.monotonic() < deadline, f"the load never got going: {faults.summarise(load.outcomes)}"
            await asyncio.sleep(0.05)
        killed_at = time.monotonic()
        faults.kill_one(target)
        deadline = killed_at + RECOVERY_S
        served = None
        while served is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            served = load.first_success_after(killed_at, kinds)
        await asyncio.sleep(1.0)
        return load.between(killed_at, time.monotonic(), kinds), served is not None
    finally:
        load.stop()
        await loader


# Serve's proxy answers a request whose ingress replica died under it with its own plain 500 (docs/reliability.md:
# not promised while the ingress runs one replica); everything raydio answers is a 502/503 with an error body.
PROXY_500 = (500, "Internal Server Error")


def _assert_failed_cleanly(outcomes: list[faults.Outcome], target: str) -> None:
    for outcome in outcomes:
        assert outcome.result not in faults.BROKEN, outcome  # never a hang, never a stream that looks complete
        if outcome.result == faults.HTTP_ERROR:
            if target == "ingress" and (outcome.status, outcome.detail) == PROXY_500:
                continue
            assert outcome.status in (502, 503), outcome
            assert '"error"' in outcome.detail, outcome  # a body that says what happened


@pytest.mark.parametrize("target", ["embedder", "digits", "chat", "ingress", "controller"])
def test_a_killed_process_fails_requests_fast_and_is_replaced(target, base_url, load_headers):
    try:
        outcomes, served = asyncio.run(_kill_under_load(base_url, load_headers, target))
        assert served, f"no replacement for {target} served within {RECOVERY_S}s"
        _assert_failed_cleanly(outcomes, target)
        if target == "controller":  # the data plane runs without the controller
            assert [o for o in outcomes if o.result != faults.OK] == []
    finally:
        _wait_ready(base_url)


def test_a_killed_job_runner_loses_no_job_and_runs_no_item_twice(http, base_url):
    accepted = http.post("/v1/jobs", json={"kind": "embed", "inputs": [f"text {i}" for i in range(12)]})
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 120
    while http.get(f"/v1/jobs/{job_id}").json()["progress"]["done"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    faults.kill_one("jobs")
    _wait_ready(base_url)
    database_url = os.environ["RAYDIO_DATABASE_URL"]
    asyncio.run(faults.wait_jobs_finished(database_url, [job_id], timeout_s=RECOVERY_S))
    assert faults.job_audit(database_url, [job_id])["lost"] == 0
    with session_scope(database_url) as session:
        assert [item.runs for item in session.query(JobItem).filter_by(job_id=job_id)] == [1] * 12


# ---------------------------------------------------------------- cancellation

def _info(app_handle, name: str) -> dict:
    return app_handle(name).info.remote().result(timeout_s=30)


def _settled(read, timeout_s: float = 120.0):
    """The value once two reads a second apart agree (work still running keeps changing it)."""
    deadline = time.monotonic() + timeout_s
    last = read()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"still changing after {timeout_s}s: {last}")


def test_a_client_that_leaves_a_stream_stops_its_generation(base_url, load_headers, app_handle):
    before = _settled(lambda: _info(app_handle, "chat")["generations"])
    body = {"model": "chat", "stream": True, "max_tokens": 512, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from one to five hundred, one number per line."}]}
    with httpx.Client(base_url=base_url, headers=load_headers, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            state = faults.StreamState()
            for line in response.iter_lines():
                faults.read_sse_line(state, line)
                if state.content_chunks >= 3:
                    break  # leave: closing the response drops the connection
    after = _settled(lambda: _info(app_handle, "chat")["generations"])
    assert after["active"] == before["active"] == 0
    # it ended as cancelled, long before its 512 tokens (a finished one would end "length" or "stop")
    assert after["ended"].get("cancelled", 0) == before["ended"].get("cancelled", 0) + 1
    assert sum(after["ended"].values()) == sum(before["ended"].values()) + 1


def test_a_client_that_leaves_a_long_embedding_request_stops_its_work(base_url, load_headers, app_handle):
    texts = [f"Passage {i}: " + "the quick brown fox jumps over the lazy dog and keeps running. " * 8 for i in range(256)]
    before = _settled(lambda: _info(app_handle, "embedder")["inputs_embedded"])

    async def leave_after_first_piece() -> None:
        async with httpx.AsyncClient(base_url=base_url, headers=load_headers, timeout=120) as client:
            request = asyncio.create_task(client.post("/v1/embeddings", json={"model": "embedder", "input": texts}))
            deadline = time.monotonic() + 120
            while await asyncio.to_thread(lambda: _info(app_handle, "embedder")["inputs_embedded"]) == before:
                assert time.monotonic() < deadline and not request.done(), "the request never reached the model"
                await asyncio.sleep(0.05)
            request.cancel()  # the client goes away: its connection closes

    asyncio.run(leave_after_first_piece())
    done = _settled(lambda: _info(app_handle, "embedder")["inputs_embedded"]) - before
    assert 0 < done < len(texts)  # the rest of the request never went through the model

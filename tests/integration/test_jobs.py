"""Durable jobs on the real stack: killing the runner and the ingress mid-job loses nothing and runs nothing twice."""

from __future__ import annotations

import os
import time

import httpx
import pytest
import ray

from services.storage.db import session_scope
from services.storage.tables import JobItem


def _kill_replicas(deployment: str) -> int:
    killed = 0
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"SERVE_REPLICA::raydio#{deployment}#"):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            killed += 1
    return killed


def _status(http: httpx.Client, job_id: str) -> dict | None:
    try:
        response = http.get(f"/v1/jobs/{job_id}")
        return response.json() if response.status_code == 200 else None
    except httpx.HTTPError:
        return None  # the ingress is restarting


def _wait_for(http: httpx.Client, job_id: str, condition, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = _status(http, job_id)
        if job is not None and condition(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not reach the expected state in {timeout_s}s: {_status(http, job_id)}")


@pytest.mark.kills
def test_jobs_survive_killed_runner_and_ingress(http):
    prompts = [f"Write one sentence about the number {i}." for i in range(8)]
    accepted = http.post("/v1/jobs", json={"kind": "complete", "inputs": prompts, "max_tokens": 16, "temperature": 0})
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    _wait_for(http, job_id, lambda j: j["progress"]["done"] >= 2, timeout_s=120)
    assert _kill_replicas("jobs") == 1
    assert _kill_replicas("ingress") >= 1  # every api replica (the test config runs two)
    job = _wait_for(http, job_id, lambda j: j["status"] in ("succeeded", "failed"), timeout_s=240)
    assert job["status"] == "succeeded", job
    assert job["attempts"] >= 2  # a second runner took it over after the first one died
    assert len(job["results"]) == 8 and all(r["text"] for r in job["results"])
    with session_scope(os.environ["RAYDIO_DATABASE_URL"]) as session:
        runs = [item.runs for item in session.query(JobItem).filter_by(job_id=job_id)]
    assert runs == [1] * 8  # no item was recorded twice


def test_embed_and_classify_jobs(http, sklearn_digits):
    embed = http.post("/v1/jobs", json={"kind": "embed", "inputs": ["one", "two", "three"]}).json()
    classify = http.post("/v1/jobs", json={"kind": "classify", "inputs": sklearn_digits.images[:6].tolist()}).json()
    embed = _wait_for(http, embed["id"], lambda j: j["status"] == "succeeded", timeout_s=60)
    classify = _wait_for(http, classify["id"], lambda j: j["status"] == "succeeded", timeout_s=60)
    assert [len(v) for v in embed["results"]] == [384] * 3
    assert [r["label"] for r in classify["results"]] == sklearn_digits.target[:6].tolist()

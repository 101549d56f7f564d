"""Durable jobs: the REST surface, and the real JobRunner working through the real model deployments in-process."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import pytest

from services.config import LimitsArgs
from services.deployments.jobs import JobRunnerDeployment
from services.storage.db import session_scope
from services.storage.repositories import JobRepository
from tests.unit.conftest import CATALOGUE, LocalHandle, instantiate


def test_jobs_are_stored_before_the_202_and_can_be_cancelled(client, unit_settings):
    response = client.post("/v1/jobs", json={"kind": "embed", "inputs": ["a", "b", "c"]})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 3} and job["results"] is None
    with session_scope(unit_settings.database_url) as s:  # in the database already
        assert JobRepository.get(s, None, job["id"]).total == 3
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    assert job["id"] in [j["id"] for j in client.get("/v1/jobs").json()]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"  # idempotent
    assert client.get("/v1/jobs/nope").status_code == 404


def test_a_job_for_a_model_that_cannot_run_it_is_404_naming_those_that_can(client):
    response = client.post("/v1/jobs", json={"kind": "classify", "model": "embedder", "inputs": [[[0] * 8] * 8]})
    assert response.status_code == 404 and "Classifiers: digits" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"kind": "train", "inputs": ["x"]}, "kind"),
        ({"kind": "embed", "inputs": []}, "inputs"),
        ({"kind": "embed", "inputs": [""]}, "inputs.0"),
        ({"kind": "classify", "inputs": [[[0] * 8] * 7]}, "Input 0 has shape [7, 8]; each item must be [8, 8]"),
        ({"kind": "classify", "inputs": [[[17] * 8] * 8]}, "between 0 and 16"),
        ({"kind": "complete", "inputs": ["hi"], "max_tokens": 100_000}, "at most 64"),
        ({"kind": "embed", "inputs": ["x"], "priority": "high"}, "priority: unknown field"),
    ],
)
def test_bad_jobs_are_400(client, body, needle):
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"]


def _wait(url: str, job_id: str, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(url) as s:
            job = JobRepository.get(s, None, job_id)
            if job.status in ("succeeded", "failed", "cancelled"):
                return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


@contextmanager
def running_runner(client, deployments, url: str, **args):
    """A real JobRunner over the real deployments, on the TestClient's event loop: ``@serve.batch`` binds its
    queue to the first loop that uses it, and the REST tests use that one too."""
    async def start():
        return instantiate(JobRunnerDeployment, models={name: LocalHandle(d) for name, d in deployments.items()},
                           catalogue=[m.model_dump(mode="json") for m in CATALOGUE], limits=LimitsArgs(max_completion_tokens=64).model_dump(),
                           args={"poll_interval_s": 0.05, **args}, database_url=url)

    runner = client.portal.call(start)
    try:
        yield runner
    finally:
        client.portal.call(_stop, runner)


async def _stop(runner) -> None:
    runner.stop()


def test_the_runner_finishes_every_kind_of_job(client, deployments, tmp_path, sklearn_digits):
    from services.storage.db import migrate

    url = f"sqlite:///{tmp_path}/jobs.db"  # its own database: jobs other tests left queued are not counted here
    migrate(url)
    with running_runner(client, deployments, url, chunk_size=2) as runner:
        with session_scope(url) as s:
            embed = JobRepository.submit(s, "local", "embed", ["a cat", "a dog", "the stock market"], {}).id
            classify = JobRepository.submit(s, "local", "classify", sklearn_digits.images[:5].tolist(), {}).id
            complete = JobRepository.submit(s, "local", "complete", ["Say hi.", "Say bye."],
                                            {"max_tokens": 4, "temperature": 0.0, "top_p": 1.0, "stop": (), "seed": None}).id
        done = {job_id: _wait(url, job_id) for job_id in (embed, classify, complete)}
        with session_scope(url) as s:
            vectors = [i.output for i in JobRepository.get(s, None, embed).items]
            labels = [i.output["label"] for i in JobRepository.get(s, None, classify).items]
            answers = [i.output for i in JobRepository.get(s, None, complete).items]
            runs = [i.runs for job_id in done for i in JobRepository.get(s, None, job_id).items]
        assert all(job.status == "succeeded" for job in done.values())
        assert np.asarray(vectors).shape == (3, 384)
        assert labels == sklearn_digits.target[:5].tolist()
        assert all(a["text"] and a["completion_tokens"] <= 4 for a in answers)
        assert runs == [1] * 10  # every item computed and recorded exactly once
        assert runner.info()["processed_items"] == 10


def test_a_failing_model_fails_the_job_with_the_reason(client, deployments, unit_settings):
    url = unit_settings.database_url
    with running_runner(client, deployments, url):
        with session_scope(url) as s:
            job_id = JobRepository.submit(s, "local", "embed", ["word " * 400], {}).id
        job = _wait(url, job_id)
        assert job.status == "failed" and "at most 256" in job.error

"""Durable batch jobs as the ingress sees them: validated, stored before the 202, read back with progress."""

from __future__ import annotations

from services.config import LimitsArgs
from services.errors import InputTooLarge, NotFound
from services.storage.db import run_in_session
from services.storage.repositories import JobRepository


def job_params(kind: str, inputs: list, max_items: int, limits: LimitsArgs, max_tokens: int = 64,
               temperature: float = 0.7) -> dict:
    """Check a job against the limits (REST and MCP submit the same way); the parameters it runs with."""
    if len(inputs) > max_items:
        raise InputTooLarge(f"Got {len(inputs)} inputs. A job holds at most {max_items}.", "inputs")
    if kind != "complete":
        return {}
    if max_tokens > limits.max_completion_tokens:
        raise InputTooLarge(f"Got max_tokens={max_tokens}. At most {limits.max_completion_tokens}.", "max_tokens")
    return {"max_tokens": max_tokens, "temperature": temperature, "top_p": 1.0, "stop": (), "seed": None}


class JobStore:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def submit(self, owner_id: str, kind: str, inputs: list, params: dict) -> dict:
        # committed before the caller answers 202
        return await run_in_session(self.database_url,
                                    lambda s: job_dict(JobRepository.submit(s, owner_id, kind, inputs, params)))

    async def get(self, owner_id: str, job_id: str) -> dict:
        return await run_in_session(self.database_url, lambda s: job_dict(_found(JobRepository.get(s, owner_id, job_id), job_id), True))

    async def list(self, owner_id: str, limit: int = 50) -> list[dict]:
        return await run_in_session(self.database_url, lambda s: [job_dict(j) for j in JobRepository.list(s, owner_id, limit)])

    async def cancel(self, owner_id: str, job_id: str) -> dict:
        return await run_in_session(self.database_url, lambda s: job_dict(_found(JobRepository.cancel(s, owner_id, job_id), job_id)))


def _found(job, job_id: str):
    if job is None:
        raise NotFound(f"No job {job_id!r} for this key.", "job_id")
    return job


def job_dict(job, with_results: bool = False) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    body = {"id": job.id, "object": "job", "kind": job.kind, "status": job.status,
            "progress": {"done": job.done, "total": job.total}, "error": job.error, "attempts": job.attempts,
            "created_at": iso(job.created_at), "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
            "results": None}
    if with_results and job.status == "succeeded":
        body["results"] = [item.output for item in job.items]
    return body

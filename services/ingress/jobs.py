"""Durable batch jobs as the ingress sees them: validated, stored before the 202, read back with progress."""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool

from services.errors import NotFound
from services.storage.db import session_scope
from services.storage.repositories import JobRepository


class JobStore:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def submit(self, owner_id: str, kind: str, inputs: list, params: dict) -> dict:
        def submit() -> dict:
            with session_scope(self.database_url) as session:
                return job_dict(JobRepository.submit(session, owner_id, kind, inputs, params))

        return await run_in_threadpool(submit)  # committed before the caller answers 202

    async def get(self, owner_id: str, job_id: str, with_results: bool = True) -> dict:
        def read() -> dict:
            with session_scope(self.database_url) as session:
                job = JobRepository.get(session, owner_id, job_id)
                if job is None:
                    raise NotFound(f"No job {job_id!r} for this key.", "job_id")
                return job_dict(job, with_results)

        return await run_in_threadpool(read)

    async def list(self, owner_id: str, limit: int = 50) -> list[dict]:
        def read() -> list[dict]:
            with session_scope(self.database_url) as session:
                return [job_dict(job) for job in JobRepository.list(session, owner_id, limit)]

        return await run_in_threadpool(read)

    async def cancel(self, owner_id: str, job_id: str) -> dict:
        def cancel() -> dict:
            with session_scope(self.database_url) as session:
                job = JobRepository.cancel(session, owner_id, job_id)
                if job is None:
                    raise NotFound(f"No job {job_id!r} for this key.", "job_id")
                return job_dict(job)

        return await run_in_threadpool(cancel)


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

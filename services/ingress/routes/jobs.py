"""Durable batch jobs: submit (202), read status with progress and results, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from services.ingress.dependencies import CallerDep, JobsDep
from services.ingress.schemas import ERROR_RESPONSES, CompleteJob, JobCreate, JobInfo

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses={k: ERROR_RESPONSES[k] for k in (400, 404)})


@router.post("", status_code=202, response_model=JobInfo)
async def submit_job(body: Annotated[JobCreate, Body(examples=[{"kind": "embed", "inputs": ["first text", "second text"]}])],
                     caller: CallerDep, jobs: JobsDep) -> JSONResponse:
    """Store a batch of texts to embed, grids to classify or prompts to complete; it runs in the background.

    The job is in the database before this answers 202, so it survives a restart of the ingress or the runner.
    """
    generation = {"max_tokens": body.max_tokens, "temperature": body.temperature} if isinstance(body, CompleteJob) else {}
    job = await jobs.submit(caller.key_id, body.kind, body.inputs, body.model, **generation)
    return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get("", response_model=list[JobInfo])
async def list_jobs(caller: CallerDep, jobs: JobsDep) -> list[dict]:
    """This key's most recent jobs with their progress (results omitted)."""
    return await jobs.list(caller.key_id)


@router.get("/{job_id}", response_model=JobInfo)
async def get_job(job_id: str, caller: CallerDep, jobs: JobsDep) -> dict:
    """Status and progress; `results` once the job succeeded."""
    return await jobs.get(caller.key_id, job_id)


@router.post("/{job_id}/cancel", response_model=JobInfo)
async def cancel_job(job_id: str, caller: CallerDep, jobs: JobsDep) -> dict:
    """Cancel a queued or running job; the runner stops at its next chunk. Finished jobs are left as they are."""
    return await jobs.cancel(caller.key_id, job_id)

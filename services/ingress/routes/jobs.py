"""Durable batch jobs: submit (202), read status with progress and results, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from services.errors import InputTooLarge
from services.ingress.dependencies import JobsDep, LimitsDep
from services.ingress.schemas import ERROR_RESPONSES, CompleteJob, JobCreate, JobInfo

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses={k: ERROR_RESPONSES[k] for k in (400, 404)})


@router.post("", status_code=202, response_model=JobInfo)
async def submit_job(body: Annotated[JobCreate, Body(examples=[{"kind": "embed", "inputs": ["first text", "second text"]}])],
                     request: Request, jobs: JobsDep, limits: LimitsDep) -> JSONResponse:
    """Store a batch of texts to embed, grids to classify or prompts to complete; it runs in the background.

    The job is in the database before this answers 202, so it survives a restart of the ingress or the runner.
    """
    if len(body.inputs) > request.app.state.jobs_args.max_items:
        raise InputTooLarge(f"Got {len(body.inputs)} inputs. A job holds at most {request.app.state.jobs_args.max_items}.",
                            "inputs")
    params = {}
    if isinstance(body, CompleteJob):
        if body.max_tokens > limits.max_completion_tokens:
            raise InputTooLarge(f"Got max_tokens={body.max_tokens}. At most {limits.max_completion_tokens}.", "max_tokens")
        params = {"max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": 1.0, "stop": (), "seed": None}
    job = await jobs.submit(request.state.principal.key_id, body.kind, body.inputs, params)
    return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get("", response_model=list[JobInfo])
async def list_jobs(request: Request, jobs: JobsDep) -> list[dict]:
    """This key's most recent jobs with their progress (results omitted)."""
    return await jobs.list(request.state.principal.key_id)


@router.get("/{job_id}", response_model=JobInfo)
async def get_job(job_id: str, request: Request, jobs: JobsDep) -> dict:
    """Status and progress; `results` once the job succeeded."""
    return await jobs.get(request.state.principal.key_id, job_id)


@router.post("/{job_id}/cancel", response_model=JobInfo)
async def cancel_job(job_id: str, request: Request, jobs: JobsDep) -> dict:
    """Cancel a queued or running job; the runner stops at its next chunk. Finished jobs are left as they are."""
    return await jobs.cancel(request.state.principal.key_id, job_id)

"""Durable batch jobs: the one submit path (REST, MCP, the jobs UI), validated and stored before the caller's 202.

The job names its model (the kind's default when omitted); the runner computes items through the same
``ModelService`` and ``ChatService`` the faces use.
"""

from __future__ import annotations

import numpy as np

from services.config import JobsArgs, LimitsArgs
from services.core.catalogue import Catalogue
from services.core.chat import Sampling, generation_params
from services.errors import InputTooLarge, InvalidInput, NotFound
from services.storage.db import run_in_session
from services.storage.repositories import JobRepository

JOB_KINDS = {"embed": "sentence-embedding", "classify": "torchscript", "complete": "text-generation"}
MAX_TEXT_CHARS = 20_000


class JobService:
    def __init__(self, store: JobStore, catalogue: Catalogue, limits: LimitsArgs, args: JobsArgs) -> None:
        self.store, self.catalogue, self.limits, self.args = store, catalogue, limits, args

    async def submit(self, owner_id: str, kind: str, inputs: list, model: str | None = None,
                     max_tokens: int = 64, temperature: float = 0.7) -> dict:
        """Check a job against the catalogue and the limits, then store it."""
        if kind not in JOB_KINDS:
            raise InvalidInput(f"Got kind {kind!r}. Jobs are {', '.join(JOB_KINDS)}.", "kind")
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput("A job needs at least one input.", "inputs")
        if len(inputs) > self.args.max_items:
            raise InputTooLarge(f"Got {len(inputs)} inputs. A job holds at most {self.args.max_items}.", "inputs")
        if kind == "classify":
            entry = self.catalogue.classifier(model)
            _check_rows(inputs, entry.signature.inputs[0])
            return await self.store.submit(owner_id, kind, inputs, {"model": entry.name})
        entry = self.catalogue.require(model, JOB_KINDS[kind])
        for i, text in enumerate(inputs):
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
                raise InvalidInput(f"Input {i} must be a non-empty text of at most {MAX_TEXT_CHARS} characters.", "inputs")
        params = {"model": entry.name}
        if kind == "complete":  # the chat limits, checked now rather than when the runner gets to it
            params.update(generation_params(entry, Sampling(max_tokens=max_tokens, temperature=temperature), self.limits))
        return await self.store.submit(owner_id, kind, inputs, params)

    async def get(self, owner_id: str, job_id: str) -> dict:
        return await self.store.get(owner_id, job_id)

    async def list(self, owner_id: str, limit: int = 50) -> list[dict]:
        return await self.store.list(owner_id, limit)

    async def cancel(self, owner_id: str, job_id: str) -> dict:
        return await self.store.cancel(owner_id, job_id)


def _check_rows(inputs: list, spec) -> None:
    """Every item is one row of the classifier's input: the declared shape and range."""
    for i, item in enumerate(inputs):
        try:
            row = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInput(f"Input {i} is not a rectangular array of numbers.", "inputs") from None
        expected = spec.shape[1:]
        if row.ndim != len(expected) or any(d not in (-1, a) for d, a in zip(expected, row.shape, strict=True)):
            raise InvalidInput(f"Input {i} has shape {list(row.shape)}; each item must be {list(expected)} (-1: any).", "inputs")
        if not np.isfinite(row).all() or (spec.range and (row.min() < spec.range[0] or row.max() > spec.range[1])):
            bounds = f" between {spec.range[0]:g} and {spec.range[1]:g}" if spec.range else ""
            raise InvalidInput(f"Input {i} must hold finite numbers{bounds}.", "inputs")


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

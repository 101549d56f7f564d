"""JobRunner: takes durable jobs from the database and runs them through the core's services, like any face.

Model calls go through the typed client (timeouts, error translation, spans, metrics). A model at capacity
(back-pressure) or a replica restarting is waited for and the chunk retried, a bounded number of times; other
model errors fail the job with the reason. Jobs are stored before the client gets its 202. A runner claims one with a lease, works through its
unfinished items in chunks, records each chunk's outputs (once: an item already finished is never
written again) and renews the lease. If the runner dies, the lease runs out and a runner — a new replica
or another one — takes the job over from the first unfinished item.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from ray import serve
from ray.serve.handle import DeploymentHandle

from services.config import JobsArgs, LimitsArgs, RaydioAppArgs, get_settings
from services.core.chat import Sampling
from services.core.services import build_core
from services.errors import ModelUnavailable
from services.storage.db import session_scope
from services.storage.repositories import JobRepository
from services.telemetry import setup_process, tracing
from services.telemetry.metrics import JOB_STATES, job_metrics

logger = logging.getLogger(__name__)


@serve.deployment(name="jobs")
class JobRunnerDeployment:
    MODEL = "jobs"
    REPORT_PERIOD_S = 5.0  # under two of Ray's metric export intervals, or the gauge would be dropped

    RETRIES = 8  # back-pressure waits per chunk before the job fails

    def __init__(self, models: dict[str, DeploymentHandle], catalogue: list[dict], args: dict | None = None,
                 limits: dict | None = None, database_url: str | None = None) -> None:
        setup_process(self.MODEL)
        self.args = JobsArgs.model_validate(args or {})
        self.database_url = database_url or get_settings().database_url
        entries = RaydioAppArgs.model_validate({"models": catalogue}).models
        self.core = build_core(entries, models, self.database_url, LimitsArgs.model_validate(limits or {}), self.args)
        self.worker = f"{_replica_name()}-{secrets.token_hex(3)}"
        self.processed_items = 0
        self._loop = asyncio.get_running_loop().create_task(self._run())
        self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    async def _report_forever(self) -> None:
        """Jobs by state, counted in the database, as the ``raydio_jobs`` gauge (0 for states with none)."""
        metrics = job_metrics()
        while True:
            try:
                counts = await asyncio.to_thread(self._counts)
                for state in JOB_STATES:
                    metrics.jobs.set(counts.get(state, 0), tags={"state": state})
            except Exception:  # noqa: BLE001 - a database hiccup must not end the reports
                logger.warning("job runner %s: could not count jobs", self.worker, exc_info=True)
            await asyncio.sleep(self.REPORT_PERIOD_S)

    def _counts(self) -> dict[str, int]:
        with session_scope(self.database_url) as session:
            return JobRepository.counts_by_status(session)

    async def _run(self) -> None:
        while True:
            try:
                job = await asyncio.to_thread(self._claim)
                if job is None:
                    await asyncio.sleep(self.args.poll_interval_s)
                    continue
                await self._work(job["id"], job["kind"], job["params"])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must survive a bad job or a database hiccup
                logger.exception("job runner %s: unexpected error; continuing", self.worker)
                await asyncio.sleep(self.args.poll_interval_s)

    def _claim(self) -> dict | None:
        with session_scope(self.database_url) as session:
            job = JobRepository.claim(session, self.worker, self.args.lease_s)
            return None if job is None else {"id": job.id, "kind": job.kind, "params": dict(job.params)}

    def _pending(self, job_id: str) -> list[tuple[int, object]]:
        with session_scope(self.database_url) as session:
            return [(item.index, item.input) for item in JobRepository.pending_items(session, job_id, self.args.chunk_size)]

    def _record(self, job_id: str, outputs: dict[int, object]) -> bool:
        """False when the job was cancelled or taken over meanwhile (nothing is written then)."""
        with session_scope(self.database_url) as session:
            recorded = JobRepository.record(session, job_id, self.worker, outputs)
            if recorded:
                JobRepository.renew(session, job_id, self.worker, self.args.lease_s)  # a no-op once it succeeded
            return recorded

    def _fail(self, job_id: str, error: str) -> None:
        with session_scope(self.database_url) as session:
            JobRepository.fail(session, job_id, self.worker, error)

    async def _work(self, job_id: str, kind: str, params: dict) -> None:
        logger.info("job runner %s: working on job %s (%s)", self.worker, job_id, kind)
        while items := await asyncio.to_thread(self._pending, job_id):
            try:
                outputs = await self._compute_with_retries(kind, [value for _, value in items], params)
            except Exception as exc:  # noqa: BLE001 - a model error fails the job, with the reason
                await asyncio.to_thread(self._fail, job_id, f"{type(exc).__name__}: {exc}")
                return
            if not await asyncio.to_thread(self._record, job_id, dict(zip([i for i, _ in items], outputs, strict=True))):
                logger.info("job runner %s: job %s was cancelled or taken over; stopping", self.worker, job_id)
                return
            self.processed_items += len(items)
            job_metrics().items.inc(len(items), tags={"kind": kind})

    async def _compute_with_retries(self, kind: str, inputs: list, params: dict) -> list:
        for attempt in range(self.RETRIES + 1):
            try:
                return await self._compute(kind, inputs, params)
            except ModelUnavailable as exc:  # at capacity or restarting: wait as told, keep the lease, retry
                if attempt == self.RETRIES:
                    raise
                logger.info("job runner %s: %s; retrying in %ss", self.worker, exc.message, exc.retry_after_s)
                await asyncio.sleep(exc.retry_after_s * (attempt + 1))
        raise AssertionError("unreachable")

    async def _compute(self, kind: str, inputs: list, params: dict) -> list:
        model = params.get("model")  # jobs stored before the catalogue named models run on the kind's default
        if kind == "embed":
            return (await self.core.models.embed(model, inputs)).vectors
        if kind == "classify":
            return [{"label": c.label, "probabilities": c.probabilities} for c in await self.core.models.classify(model, inputs)]
        entry = self.core.catalogue.require(model, "text-generation")
        # Never more prompts in flight than the chat deployment takes at once: the rest would only be refused.
        gate = asyncio.Semaphore(entry.deployment.max_ongoing_requests)
        sampling = Sampling(max_tokens=params.get("max_tokens"), temperature=params.get("temperature"),
                            top_p=params.get("top_p", 1.0), stop=tuple(params.get("stop") or ()), seed=params.get("seed"))

        async def complete(prompt: str) -> dict:
            async with gate:
                answer = await self.core.chat.complete(None, [{"role": "user", "content": prompt}], entry.name, sampling)
            return {"text": answer.text, "finish_reason": answer.finish_reason, "completion_tokens": answer.completion_tokens}

        return list(await asyncio.gather(*(complete(prompt) for prompt in inputs)))

    @tracing.entrypoint
    def info(self) -> dict:
        return {"name": "jobs", "worker": self.worker, "processed_items": self.processed_items}

    def check_health(self) -> None:
        if self._loop.done():
            raise RuntimeError("the job loop stopped")

    def stop(self) -> None:
        self._loop.cancel()
        self._reporter.cancel()


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside a replica (tests)
        return "local"

"""Fault injection under load, shared by ``make chaos`` (loadtests/chaos.py) and tests/integration/test_faults.py.

A fault is a SIGKILL of one process of this driver's own Ray cluster (a Serve replica, or the Serve controller),
found by its process title among this process's descendants: never another Ray instance on the same machine.
The load is plain asyncio + httpx so that every request's outcome is classified exactly: a chat stream ends with
``[DONE]`` after a ``finish_reason`` (complete), carries an error event (failed, said so), breaks off with a
broken connection (failed, visibly), or ends without either (truncated: the one outcome that must never happen).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import httpx
import psutil

APP = "raydio"
HANG_S = 30.0  # hung: no answer for this long (a stream: no event for this long; it may take longer in all)
STREAM_LIMIT_S = 600.0

# What a request ended as. The first group is healthy; "hung" and "truncated" break raydio's promise.
OK, HTTP_ERROR, CONNECTION_ERROR, STREAM_ERROR_EVENT, HUNG, TRUNCATED = (
    "ok", "http_error", "connection_error", "stream_error_event", "hung", "truncated")
BROKEN = (HUNG, TRUNCATED)


# ------------------------------------------------------------------ processes

def replica_processes(deployment: str, app: str = APP) -> list[psutil.Process]:
    """This driver's live replica processes of one deployment (title ``ray::ServeReplica:<app>:<deployment>``)."""
    return _own(lambda title: title == f"ray::ServeReplica:{app}:{deployment}" or
                title.startswith(f"ray::ServeReplica:{app}:{deployment}."))


def controller_processes() -> list[psutil.Process]:
    return _own(lambda title: title == "ray::ServeController" or title.startswith("ray::ServeController."))


def _own(match: Callable[[str], bool]) -> list[psutil.Process]:
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            cmdline = process.cmdline()
            if cmdline and match(cmdline[0].strip()) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def sigkill(processes: list[psutil.Process]) -> list[int]:
    """SIGKILL each process (a real crash: no graceful shutdown, no Ray-level kill); returns the PIDs."""
    pids = []
    for process in processes:
        try:
            os.kill(process.pid, signal.SIGKILL)
            pids.append(process.pid)
        except ProcessLookupError:
            pass
    return pids


def kill_one(target: str) -> list[int]:
    """SIGKILL one replica of ``target`` (a deployment name) or the Serve controller (``controller``)."""
    processes = controller_processes() if target == "controller" else replica_processes(target)
    if not processes:
        raise RuntimeError(f"no live process of {target!r} in this driver's Ray cluster")
    return sigkill(processes[:1])


# ------------------------------------------------------------------ load

@dataclass
class Outcome:
    kind: str
    started: float
    ended: float
    result: str
    status: int | None = None
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class StreamState:
    """What a reader saw of one SSE chat stream."""

    content_chunks: int = 0
    finish_reason: str | None = None
    error: dict | None = None
    done: bool = False

    def classify(self) -> str:
        if self.error is not None:
            return STREAM_ERROR_EVENT
        if self.done and self.finish_reason:
            return OK
        return TRUNCATED  # ended cleanly without a finish_reason, or without [DONE]: looks complete, is not


def read_sse_line(state: StreamState, line: str) -> None:
    if not line.startswith("data: "):
        return
    data = line[len("data: "):]
    if data == "[DONE]":
        state.done = True
        return
    event = json.loads(data)
    if "error" in event:
        state.error = event["error"]
        return
    for choice in event.get("choices", []):
        if choice.get("delta", {}).get("content"):
            state.content_chunks += 1
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]


DIGIT = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
         [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
         [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]  # scikit-learn's digits[0], a zero


@dataclass
class Load:
    """Bounded, steady load on every kind, recording each request's outcome; jobs accepted are remembered."""

    url: str
    headers: dict[str, str]
    embed_workers: int = 2
    digits_workers: int = 1
    chat_workers: int = 2
    job_period_s: float | None = 4.0  # None: no jobs
    chat_tokens: int = 24
    pause_s: float = 0.05
    outcomes: list[Outcome] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    streams_open: int = 0  # chat streams that have produced content and not ended yet
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=HANG_S + 30, limits=limits) as client:
            tasks = [*(self._loop(client, "embed", self._embed) for _ in range(self.embed_workers)),
                     *(self._loop(client, "digits", self._digits) for _ in range(self.digits_workers)),
                     *(self._loop(client, "chat", self._chat) for _ in range(self.chat_workers)),
                     *([self._jobs(client)] if self.job_period_s else [])]
            await asyncio.gather(*tasks)

    def stop(self) -> None:
        self._stop.set()

    async def _loop(self, client: httpx.AsyncClient, kind: str, call) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                result, status, detail = await asyncio.wait_for(call(client), STREAM_LIMIT_S if kind == "chat" else HANG_S)
            except TimeoutError:
                result, status, detail = HUNG, None, f"no answer in {HANG_S:.0f}s"
            except httpx.HTTPError as exc:
                result, status, detail = CONNECTION_ERROR, None, f"{type(exc).__name__}: {exc}"[:200]
            self.outcomes.append(Outcome(kind, started, time.monotonic(), result, status, detail))
            if result != OK:
                await asyncio.sleep(0.5)  # as a client told to retry shortly would
            await asyncio.sleep(self.pause_s)

    @staticmethod
    def _answer(response: httpx.Response) -> tuple[str, int, str]:
        if response.status_code == 200:
            return OK, 200, ""
        return HTTP_ERROR, response.status_code, response.text[:200]

    async def _embed(self, client: httpx.AsyncClient):
        return self._answer(await client.post("/v1/embeddings", json={"model": "embedder", "input": ["a steady load", "of two texts"]}))

    async def _digits(self, client: httpx.AsyncClient):
        return self._answer(await client.post("/v1/digits/classify", json={"inputs": [DIGIT]}))

    async def _chat(self, client: httpx.AsyncClient):
        body = {"model": "chat", "stream": True, "max_tokens": self.chat_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": "Tell me about the sea in a few sentences."}]}
        state, counted = StreamState(), False
        try:
            async with asyncio.timeout(HANG_S) as idle:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        return self._answer(response)
                    async for line in response.aiter_lines():
                        idle.reschedule(asyncio.get_running_loop().time() + HANG_S)  # a slow stream is not a hung one
                        read_sse_line(state, line)
                        if state.content_chunks and not counted:
                            counted = True
                            self.streams_open += 1
        except httpx.HTTPError as exc:  # the connection broke mid-stream: visibly incomplete, not truncated
            return CONNECTION_ERROR, 200, f"after {state.content_chunks} chunks: {type(exc).__name__}"
        except TimeoutError:
            return HUNG, None, f"no event for {HANG_S:.0f}s after {state.content_chunks} chunks"
        finally:
            if counted:
                self.streams_open -= 1
        detail = json.dumps(state.error)[:200] if state.error else (
            "" if state.classify() == OK else f"{state.content_chunks} chunks, finish_reason={state.finish_reason}, done={state.done}")
        return state.classify(), 200, detail

    async def _jobs(self, client: httpx.AsyncClient) -> None:
        specs = [{"kind": "embed", "inputs": [f"job text {i}" for i in range(6)]},
                 {"kind": "classify", "inputs": [DIGIT] * 6},
                 {"kind": "complete", "inputs": [f"Name a colour ({i})." for i in range(3)], "max_tokens": 8, "temperature": 0}]
        turn = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(client.post("/v1/jobs", json=specs[turn % len(specs)]), HANG_S)
                if response.status_code == 202:
                    self.jobs.append(response.json()["id"])
                result, status, detail = self._answer(response) if response.status_code != 202 else (OK, 202, "")
            except TimeoutError:
                result, status, detail = HUNG, None, f"no answer in {HANG_S:.0f}s"
            except httpx.HTTPError as exc:
                result, status, detail = CONNECTION_ERROR, None, f"{type(exc).__name__}: {exc}"[:200]
            self.outcomes.append(Outcome("jobs", started, time.monotonic(), result, status, detail))
            turn += 1
            try:
                await asyncio.wait_for(self._stop.wait(), self.job_period_s)
            except TimeoutError:
                pass

    def between(self, start: float, end: float, kinds: tuple[str, ...] | None = None) -> list[Outcome]:
        """Requests that were under way at some moment in [start, end]."""
        return [o for o in self.outcomes if o.ended >= start and o.started <= end and (kinds is None or o.kind in kinds)]

    def first_success_after(self, moment: float, kinds: tuple[str, ...] | None = None) -> float | None:
        """When the first request of ``kinds`` sent after ``moment`` succeeded."""
        ends = [o.ended for o in self.outcomes if o.started > moment and o.result == OK and (kinds is None or o.kind in kinds)]
        return min(ends) if ends else None


def summarise(outcomes: list[Outcome]) -> dict:
    """Counts by result, the failures' statuses and first details, the slowest failure."""
    failed = [o for o in outcomes if o.result != OK]
    how = Counter(f"{o.result}{'' if o.status in (None, 200) else f' {o.status}'}" for o in failed)
    return {"requests": len(outcomes), "failed": len(failed), "how": dict(how),
            "broken": sum(o.result in BROKEN for o in outcomes),
            "slowest_failure_s": round(max((o.seconds for o in failed), default=0.0), 2),
            "examples": sorted({f"{o.kind}: {o.result} {o.status or ''} {o.detail}".strip()[:240] for o in failed})[:6]}


# ------------------------------------------------------------------ jobs, checked in the database

def job_audit(database_url: str, job_ids: list[str]) -> dict:
    """Every accepted job should have succeeded with each item recorded exactly once."""
    from services.storage.db import session_scope
    from services.storage.tables import Job, JobItem

    with session_scope(database_url) as session:
        jobs = {job.id: job for job in session.query(Job).filter(Job.id.in_(job_ids))}
        runs = Counter()
        for item in session.query(JobItem).filter(JobItem.job_id.in_(job_ids)):
            runs["item_runs_0" if item.runs == 0 else "item_runs_1" if item.runs == 1 else "item_runs_2+"] += 1
        statuses = Counter(job.status for job in jobs.values())
        lost = [job_id for job_id in job_ids if job_id not in jobs or jobs[job_id].status != "succeeded"]
        return {"accepted": len(job_ids), "statuses": dict(statuses), "lost": len(lost), "lost_ids": lost[:5],
                "items_run_twice": runs["item_runs_2+"], "items_never_run": runs["item_runs_0"],
                "errors": sorted({jobs[j].error for j in lost if j in jobs and jobs[j].error})[:3]}


async def wait_jobs_finished(database_url: str, job_ids: list[str], timeout_s: float) -> None:
    from services.storage.db import session_scope
    from services.storage.tables import Job

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(database_url) as session:
            open_jobs = session.query(Job).filter(Job.id.in_(job_ids), Job.status.in_(("queued", "running"))).count()
        if not open_jobs:
            return
        await asyncio.sleep(1.0)


def as_dict(outcome: Outcome) -> dict:
    return asdict(outcome)

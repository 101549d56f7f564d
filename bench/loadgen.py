"""A closed-loop load generator: a fixed number of asyncio workers, each sending its next request when the
previous one answered, bounded in time and in count, to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import numpy as np

# One operation: sends whatever it needs (one request, or a POST then an event stream) and returns the status
# of the answer and whether a 429/503 carried Retry-After.
Operation = Callable[[aiohttp.ClientSession, int], Awaitable[tuple[int, bool]]]


@dataclass
class LoadResult:
    name: str
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)  # HTTP status, or "timeout" / "error:<type>"
    rejections_without_retry_after: int = 0
    completions_at_s: list[float] = field(default_factory=list)  # offsets of the successful answers, for charts

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if isinstance(s, int) and 200 <= s < 300)

    @property
    def failed(self) -> int:
        return sum(self.statuses.values()) - self.ok

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def unexpected_failures(self) -> int:
        """Failures other than deliberate back-pressure (429/503 with Retry-After)."""
        deliberate = self.statuses.get(429, 0) + self.statuses.get(503, 0) - self.rejections_without_retry_after
        return self.failed - deliberate


def _local_only(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"Got {url}. The benchmark only sends load to 127.0.0.1.")


async def drive(name: str, base_url: str, operation: Operation, *, concurrency: int, duration_s: float,
                max_requests: int = 1_000_000, warmup_s: float = 2.0, timeout_s: float = 30.0,
                headers: dict[str, str] | None = None) -> LoadResult:
    """Run ``operation`` from ``concurrency`` workers for ``warmup_s`` (not recorded), then ``duration_s``.

    Throughput counts the answers that arrive inside the measured window, whenever their request started.

    Sends at most ``max_requests`` operations in all, warm-up included. Each request carries its own X-Request-ID.
    """
    _local_only(base_url)
    result = LoadResult(name, concurrency, duration_s)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    loop_start = time.perf_counter()
    record_from = loop_start + warmup_s
    deadline = record_from + duration_s
    sent = 0

    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout, headers=headers) as session:
        async def worker() -> None:
            nonlocal sent
            while sent < max_requests:
                started = time.perf_counter()
                if started >= deadline:
                    return
                sent += 1
                try:
                    status, retry_after = await operation(session, sent)
                except TimeoutError:
                    status, retry_after = "timeout", False
                except aiohttp.ClientError as exc:
                    status, retry_after = f"error:{type(exc).__name__}", False
                finished = time.perf_counter()
                if not record_from <= finished <= deadline:
                    continue  # answered during the warm-up or after the end: outside the measured window
                result.statuses[status] += 1
                if status in (429, 503) and not retry_after:
                    result.rejections_without_retry_after += 1
                if isinstance(status, int) and 200 <= status < 300:
                    result.latencies_ms.append((finished - started) * 1000)
                    result.completions_at_s.append(finished - record_from)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    # When the count bound ends the run early, throughput is over the time actually used.
    result.duration_s = min(duration_s, max(time.perf_counter() - record_from, 1e-9))
    return result


def request_id() -> dict[str, str]:
    return {"X-Request-ID": uuid.uuid4().hex}


async def _status(response: aiohttp.ClientResponse) -> tuple[int, bool]:
    await response.read()
    return response.status, "Retry-After" in response.headers


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "The stock market fell sharply today.",
    "Someone performs music with a string instrument.",
    "Cats like to sleep in the sun.",
    "Heavy rain is expected across the north tomorrow.",
    "She finished the marathon in under three hours.",
    "The new library opens to the public next week.",
]


def openai_embedding(path: str = "/v1/embeddings") -> Operation:
    """One sentence per request, the OpenAI embeddings body (raydio, and the naive peer, which takes the same)."""
    async def operation(session: aiohttp.ClientSession, i: int) -> tuple[int, bool]:
        body = {"model": "embedder", "input": SENTENCES[i % len(SENTENCES)]}
        async with session.post(path, json=body, headers=request_id()) as response:
            return await _status(response)
    return operation


def gradio_call(api_name: str, prefix: str = "") -> Operation:
    """Gradio's HTTP API as its docs show it: POST .../call/<api_name>, then read the event stream to `complete`."""
    async def operation(session: aiohttp.ClientSession, i: int) -> tuple[int, bool]:
        headers = request_id()
        async with session.post(f"{prefix}/gradio_api/call/{api_name}", json={"data": [SENTENCES[i % len(SENTENCES)]]},
                                headers=headers) as response:
            if response.status != 200:
                return await _status(response)
            event_id = (await response.json())["event_id"]
        async with session.get(f"{prefix}/gradio_api/call/{api_name}/{event_id}", headers=headers) as response:
            event = None
            async for line in response.content:
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                    if event in ("complete", "error"):
                        break
            return (response.status if event == "complete" else 500), False
    return operation


def get(path: str) -> Operation:
    async def operation(session: aiohttp.ClientSession, i: int) -> tuple[int, bool]:
        async with session.get(path, headers=request_id()) as response:
            return await _status(response)
    return operation

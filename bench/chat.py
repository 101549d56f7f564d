"""Chat through a served stack: what a client sees of the batching engine over HTTP and through the Gradio UI.

- ``http_round``: N concurrent streams through ``POST /v1/chat/completions`` (SSE, usage included); total
  completion tokens over the round's wall time, and each stream's time to its first content delta.
- ``gradio_users``: one gradio_client user of ``/ui/chat/`` alone, then N at once; the last of the N finishing
  against the lone one is the "N users" ratio of the front-door issue.

Both drive 127.0.0.1 only. Streams may end early at EOS over HTTP (a served model cannot be told to ignore it), so
the rows count the tokens actually generated; prompts ask for long answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp

from bench.generation import PROMPTS, Row
from bench.loadgen import _local_only


async def _stream(session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int, row: Row) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    started, first = time.perf_counter(), True
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"chat stream answered {response.status}: {(await response.text())[:200]}")
        async for line in response.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first and any(c["delta"].get("content") for c in event.get("choices", [])):
                row.ttft_s.append(time.perf_counter() - started)
                first = False
            if event.get("usage"):
                row.tokens += event["usage"]["completion_tokens"]


async def http_round(url: str, headers: dict, streams: int, max_tokens: int, row: Row) -> None:
    """One round of ``streams`` concurrent chat streams; adds its tokens, wall time and TTFTs to ``row``."""
    _local_only(url)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(_stream(session, url, PROMPTS[i % len(PROMPTS)], max_tokens, row) for i in range(streams)))
        row.seconds += time.perf_counter() - started


async def http_rows(url: str, headers: dict, streams: int = 8, max_tokens: int = 64, repeats: int = 2) -> list[Row]:
    """1 stream and ``streams`` streams through the REST API, ``repeats`` rounds each, after a short warm-up."""
    await http_round(url, headers, 1, 4, Row("", 1))
    one, many = Row("HTTP /v1/chat/completions, 1 stream", 1), Row(f"HTTP /v1/chat/completions, {streams} streams", streams)
    for _ in range(repeats):
        await http_round(url, headers, 1, max_tokens, one)
        await http_round(url, headers, streams, max_tokens, many)
    return [one, many]


def gradio_users(url: str, headers: dict, users: int = 4, max_tokens: int = 64) -> dict:
    """Seconds for one gradio_client chat user alone, then for each of ``users`` at once (same prompt, greedy)."""
    from gradio_client import Client

    _local_only(url)
    clients = [Client(f"{url}/ui/chat/", verbose=False, headers=headers) for _ in range(users)]  # one per user

    def chat(client: Client) -> float:
        started = time.perf_counter()
        answer, _state = client.predict(PROMPTS[0], max_tokens, 0.0, {}, api_name="/chat")
        if not answer:
            raise RuntimeError("the chat page answered nothing")
        return time.perf_counter() - started

    chat(clients[0])  # warm-up
    alone = chat(clients[0])
    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        each = sorted(pool.map(chat, clients))
    return {"users": users, "alone_s": alone, "each_s": each, "last_s": time.perf_counter() - started}


def users_table(result: dict) -> str:
    ratio = result["last_s"] / result["alone_s"]
    return ("| users | one alone s | each of them s | last finished s | last ÷ alone (target ≤ 2) |\n|---|---|---|---|---|\n"
            f"| {result['users']} | {result['alone_s']:.1f} | {' '.join(f'{s:.1f}' for s in result['each_s'])} | "
            f"{result['last_s']:.1f} | {ratio:.2f} |")

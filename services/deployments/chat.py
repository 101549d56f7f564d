"""``text-generation`` deployment: one token stream per request.

Autoregressive decoding gains little from ``@serve.batch`` on a CPU and complicates streaming,
so generations interleave token by token instead (bounded by ``max_ongoing_requests``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from ray import serve

from services.config import LimitsArgs, TextGenerationModelArgs
from services.errors import InputTooLarge, InvalidInput
from services.models import sources
from services.models.chat import ChatModel, GenerationParams
from services.telemetry import setup_process, tracing
from services.telemetry.gpu import start_gpu_sampler
from services.telemetry.metrics import chat_metrics

_DONE = object()


@serve.deployment
class ChatDeployment:
    def __init__(self, model: dict, cache_dir: str, device: str = "auto", limits: dict | None = None) -> None:
        self.spec = TextGenerationModelArgs.model_validate(model)
        self.MODEL = self.spec.name
        setup_process(self.MODEL)
        self.limits = LimitsArgs.model_validate(limits or {})
        self.model = ChatModel(sources.resolve(self.spec.source, Path(cache_dir)), Path(cache_dir), device).load()
        self.metrics = chat_metrics()
        # Generations under way, and how the ended ones ended ("cancelled": the caller went away or failed first).
        self.active = 0
        self.ended: Counter[str] = Counter()
        start_gpu_sampler(self.MODEL, self.model.device)

    @tracing.entrypoint
    async def generate(self, messages: list[dict], params: dict) -> AsyncIterator[dict]:
        """Stream ``{"prompt_tokens", "message_tokens"}`` first (after validation), then ``{"text", "finish_reason",
        "completion_tokens"}`` per step."""
        generation = GenerationParams(**params)
        try:
            prompt_ids = self.model.prompt_ids(messages)
        except Exception as exc:  # the chat template rejects malformed conversations
            raise InvalidInput(f"The messages cannot be formatted for the model: {exc}", "messages") from exc
        limit = min(self.limits.max_prompt_tokens, self.model.context_length - generation.max_tokens)
        if len(prompt_ids) > limit:
            raise InputTooLarge(
                f"The prompt has {len(prompt_ids)} tokens. With max_tokens={generation.max_tokens} at most "
                f"{limit} prompt tokens are accepted.",
                "messages",
            )
        yield {"prompt_tokens": len(prompt_ids), "message_tokens": [self.model.count_tokens(m["content"]) for m in messages]}
        tags = {"model": self.MODEL}
        if prompt_ids:
            self.metrics.prompt_tokens.inc(len(prompt_ids), tags=tags)
        started = last = time.perf_counter()
        finish_reason, completion_tokens, chunks = "cancelled", 0, 0
        # Not made current: a generator's context belongs to its consumer between items.
        span = tracing.tracer().start_span(f"{self.MODEL}.forward", attributes={"raydio.prompt_tokens": len(prompt_ids)})
        self.active += 1
        try:
            steps = self.model.generate(prompt_ids, generation)
            while (delta := await asyncio.to_thread(next, steps, _DONE)) is not _DONE:
                now = time.perf_counter()
                if delta.text:
                    chunks += 1
                    if last == started:
                        self.metrics.time_to_first_token.observe(now - started, tags=tags)
                        span.add_event("first token")
                    else:
                        self.metrics.time_between_tokens.observe(now - last, tags=tags)
                    last = now
                if delta.finish_reason:
                    finish_reason, completion_tokens = delta.finish_reason, delta.completion_tokens
                yield {"text": delta.text, "finish_reason": delta.finish_reason, "completion_tokens": delta.completion_tokens}
        finally:
            # A consumer that goes away cancels this generator at its await: the step under way finishes in its
            # thread and no other starts.
            self.active -= 1
            self.ended[finish_reason] += 1
            span.set_attribute("raydio.completion_tokens", completion_tokens or chunks)
            span.set_attribute("raydio.finish_reason", finish_reason)
            span.end()
            if tokens := completion_tokens or chunks:  # a cancelled stream never learns the exact count
                self.metrics.generated_tokens.inc(tokens, tags={**tags, "finish_reason": finish_reason})

    @tracing.entrypoint
    def info(self) -> dict:
        return {
            "name": self.MODEL,
            "kind": self.spec.kind,
            "model_id": self.spec.identity,
            "device": str(self.model.device),
            "context_length": self.model.context_length,
            "generations": {"active": self.active, "ended": dict(self.ended)},
        }

    def check_health(self) -> None:
        if not self.model.ready:
            raise RuntimeError(f"{self.MODEL} model is not loaded")

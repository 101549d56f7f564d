"""Chat deployment: one token stream per request.

Autoregressive decoding gains little from ``@serve.batch`` on a CPU and complicates streaming,
so generations interleave token by token instead (bounded by ``max_ongoing_requests``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from ray import serve

from services.config import LimitsArgs
from services.errors import InputTooLarge, InvalidInput
from services.models.chat import ChatModel, GenerationParams

_DONE = object()


@serve.deployment(name="chat")
class ChatDeployment:
    def __init__(self, cache_dir: str, device: str = "auto", limits: dict | None = None) -> None:
        self.limits = LimitsArgs.model_validate(limits or {})
        self.model = ChatModel(Path(cache_dir), device).load()

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
        steps = self.model.generate(prompt_ids, generation)
        while (delta := await asyncio.to_thread(next, steps, _DONE)) is not _DONE:
            yield {"text": delta.text, "finish_reason": delta.finish_reason, "completion_tokens": delta.completion_tokens}

    def info(self) -> dict:
        return {
            "name": "chat",
            "model_id": self.model.model_id,
            "device": str(self.model.device),
            "context_length": self.model.context_length,
        }

    def check_health(self) -> None:
        if not self.model.ready:
            raise RuntimeError("chat model is not loaded")

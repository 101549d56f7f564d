"""Embedder deployment: requests are lists of strings, merged into one forward pass by ``@serve.batch``."""

from __future__ import annotations

import asyncio
from collections import Counter

from ray import serve

from services.config import BatchingArgs, LimitsArgs
from services.deployments import split_like
from services.errors import InputTooLarge
from services.models.embedder import EmbedderModel


@serve.deployment(name="embedder")
class EmbedderDeployment:
    def __init__(self, device: str = "auto", limits: dict | None = None) -> None:
        self.limits = LimitsArgs.model_validate(limits or {})
        self.model = EmbedderModel(device).load()
        self.batch_sizes: Counter[int] = Counter()

    def reconfigure(self, user_config: dict) -> None:
        batching = BatchingArgs.model_validate(user_config)
        self._embed_batch.set_max_batch_size(batching.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    async def embed(self, texts: list[str]) -> dict:
        """Embed one request's strings; returns ``vectors`` (list of floats per string) and ``tokens``."""
        if len(texts) > self.limits.max_embedding_inputs:
            raise InputTooLarge(
                f"Got {len(texts)} inputs. At most {self.limits.max_embedding_inputs} are allowed per request.", "input"
            )
        tokens = self.model.count_tokens(texts)
        limit = min(self.limits.max_embedding_tokens, self.model.max_seq_length)
        for i, count in enumerate(tokens):
            if count > limit:
                raise InputTooLarge(f"Input {i} has {count} tokens. The embedder accepts at most {limit}.", "input")
        vectors = await self._embed_batch(texts)
        return {"vectors": vectors, "tokens": tokens}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed_batch(self, requests: list[list[str]]) -> list[list[list[float]]]:
        self.batch_sizes[len(requests)] += 1
        flat = [text for texts in requests for text in texts]
        result = await asyncio.to_thread(self.model.embed, flat)
        return split_like(requests, result.vectors.tolist())

    def info(self) -> dict:
        return {
            "name": "embedder",
            "model_id": self.model.model_id,
            "device": str(self.model.device),
            "dimensions": self.model.dimensions,
            "max_input_tokens": min(self.limits.max_embedding_tokens, self.model.max_seq_length),
            "batch_sizes": dict(self.batch_sizes),
        }

    def check_health(self) -> None:
        if not self.model.ready:
            raise RuntimeError("embedder model is not loaded")

"""``sentence-embedding`` deployment: requests are lists of strings, merged into one forward pass by ``@serve.batch``.

Tokens are counted once, here (for the limit and the usage report); the forward pass does not count them again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from opentelemetry import context as otel_context
from ray import serve

from services.config import BatchingArgs, SentenceEmbeddingModelArgs
from services.deployments import BatchedDeployment, split_like
from services.deployments.autoscaling import REQUESTS_IN_FLIGHT
from services.errors import InputTooLarge
from services.models import sources
from services.models.embedder import EmbedderModel
from services.telemetry import tracing
from services.telemetry.gpu import start_gpu_sampler
from services.telemetry.metrics import model_metrics


@serve.deployment
class EmbedderDeployment(BatchedDeployment):
    ARGS, BATCH_METHOD = SentenceEmbeddingModelArgs, "_embed_batch"

    def __init__(self, model: dict, cache_dir: str, device: str = "auto", limits: dict | None = None) -> None:
        self._start(model, limits)
        path = sources.resolve(self.spec.source, Path(cache_dir))
        self.model = EmbedderModel(path, device, normalize=self.spec.normalize).load()
        self.batch_sizes: Counter[int] = Counter()
        self.batching = BatchingArgs()  # the @serve.batch defaults below, until reconfigure() applies the entry's
        self.inputs_embedded = 0  # texts through the model: work done, whether or not a caller was still waiting
        self.requests_in_flight = 0
        start_gpu_sampler(self.MODEL, self.model.device)

    def record_autoscaling_stats(self) -> dict[str, int]:
        """Requests held, for autoscaling (a coalesced call holds several: services.deployments.autoscaling)."""
        return {REQUESTS_IN_FLIGHT: self.requests_in_flight}

    @tracing.entrypoint
    async def embed(self, texts: list[str]) -> dict:
        """Embed one request's strings; returns ``vectors`` (list of floats per string) and ``tokens``."""
        self.requests_in_flight += 1
        try:
            return await self._embed(texts)
        finally:
            self.requests_in_flight -= 1

    async def _embed(self, texts: list[str]) -> dict:
        if len(texts) > self.limits.max_embedding_inputs:
            raise InputTooLarge(
                f"Got {len(texts)} inputs. At most {self.limits.max_embedding_inputs} are allowed per request.", "input"
            )
        tokens = self.model.count_tokens(texts)
        limit = min(self.limits.max_embedding_tokens, self.model.max_seq_length)
        for i, count in enumerate(tokens):
            if count > limit:
                raise InputTooLarge(f"Input {i} has {count} tokens. The embedder accepts at most {limit}.", "input")
        # A long request goes through the batcher in pieces, one after another: other requests share the forward
        # passes in between, and a cancelled request (its client went away) stops after the piece under way.
        vectors, size = [], self.batching.max_batch_size
        for start in range(0, len(texts), size):
            piece = texts[start:start + size]
            vectors += await self._embed_batch(piece, otel_context.get_current())
        return {"vectors": vectors, "tokens": tokens}

    async def embed_many(self, requests: list[tuple[list[str], dict | None]]) -> list[dict | Exception]:
        """Several requests in one handle call (the ingress merges concurrent ones: ``services.core.coalescing``):
        each ``(texts, trace_carrier)`` is embedded as by ``embed``, in its own trace, and answered or refused on
        its own (the exception in its place). They reach ``@serve.batch`` together, so they share forward passes."""
        return list(await asyncio.gather(*(self.embed(texts, trace_carrier=carrier) for texts, carrier in requests),
                                         return_exceptions=True))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed_batch(self, requests: list[list[str]], contexts: list[otel_context.Context]) -> list[list[list[float]]]:
        self.batch_sizes[len(requests)] += 1
        flat = [text for texts in requests for text in texts]
        with tracing.batch_spans(self.MODEL, contexts, len(flat)) as links, \
                tracing.span(f"{self.MODEL}.forward", links, **{"raydio.batch.requests": len(requests), "raydio.batch.inputs": len(flat)}):
            started = time.perf_counter()
            vectors = await asyncio.to_thread(self.model.embed, flat)
            self.inputs_embedded += len(flat)
            model_metrics().observe_forward(self.MODEL, len(flat), time.perf_counter() - started)
        return split_like(requests, vectors.tolist())

    @tracing.entrypoint
    def info(self) -> dict:
        return self._info(dimensions=self.model.dimensions, batch_sizes=dict(self.batch_sizes),
                          max_input_tokens=min(self.limits.max_embedding_tokens, self.model.max_seq_length),
                          inputs_embedded=self.inputs_embedded)

"""``text-generation`` deployment: one token stream per request, batched across requests by the model's engine.

``@serve.batch`` would fix a batch when it starts; the engine (``services/models/generation.py``) batches
continuously instead: concurrent generations share decode steps, join between steps and leave when done.
Size the replica for it (docs/generation.md): ``max_ongoing_requests`` at least ``max_batch_size`` so the
streams reach the engine together, and torch threads no more than the cores the replica really gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import ray
import torch
from ray import serve

from services.config import TextGenerationModelArgs
from services.deployments import CatalogueDeployment
from services.errors import InputTooLarge, InvalidInput
from services.models import guided, sources
from services.models.chat import ChatModel, GenerationParams
from services.models.tool_calls import Guide, ReplySplitter, render_messages
from services.telemetry import tracing
from services.telemetry.gpu import start_gpu_sampler
from services.telemetry.metrics import chat_metrics

logger = logging.getLogger(__name__)


def replica_torch_threads(requested: int | None = None) -> int:
    """Torch threads for this replica: ``requested``, else the CPUs Ray reserved for it (rounded down, at least 1).

    Ray sets OMP_NUM_THREADS to the same floor(num_cpus) when it is unset, so this only makes it explicit and
    overridable. More threads than free cores is worse than fewer: OpenMP threads spin at barriers and a
    descheduled one stalls every step (measured in docs/generation.md).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"Got torch_threads={requested}. It must be at least 1.")
        return requested
    cpus = None
    if ray.is_initialized():
        with contextlib.suppress(Exception):  # outside an actor there is nothing assigned
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, math.floor(cpus)) if cpus else torch.get_num_threads()


@serve.deployment
class ChatDeployment(CatalogueDeployment):
    ARGS = TextGenerationModelArgs

    def __init__(self, model: dict, cache_dir: str, device: str = "auto", limits: dict | None = None) -> None:
        """The entry's ``generation`` sizes the engine: ``max_batch_size`` generations share one decode step (more
        wait for a free slot), ``max_batch_tokens`` bounds the batch's KV cache, ``torch_threads`` defaults to the
        replica's ``num_cpus`` rounded down (at least 1)."""
        self._start(model, limits)
        generation = self.spec.generation
        threads = replica_torch_threads(generation.torch_threads)
        torch.set_num_threads(threads)
        logger.info("%s replica: %d torch thread(s), max_batch_size %d", self.MODEL, threads, generation.max_batch_size)
        self.model = ChatModel(sources.resolve(self.spec.source, Path(cache_dir)), Path(cache_dir), device,
                               max_batch_size=generation.max_batch_size,
                               max_batch_tokens=generation.max_batch_tokens).load()
        # Grammars for tools / response_format: the llguidance tokenizer is built once here (~1-2 s); a new schema
        # then compiles in tens of milliseconds and the last 128 are cached (keyed by their grammar text).
        self.grammars = guided.GrammarCompiler(self.model.tokenizer, self.model.torch_model.config.vocab_size,
                                               self.model.engine.eos_token_ids)
        self.metrics = chat_metrics()
        start_gpu_sampler(self.MODEL, self.model.device)

    @tracing.entrypoint
    async def generate(self, messages: list[dict], params: dict) -> AsyncIterator[dict]:
        """Stream ``{"prompt_tokens", "message_tokens"}`` first (after validation), then ``{"text", "tool_calls",
        "finish_reason", "completion_tokens"}`` per step.

        ``params["guide"]`` (``tool_calls.Guide.as_dict()``, checked by the core) asks for tools and/or a response
        schema: the tools are rendered into the prompt, generation is masked to the grammar, and a reply that is a
        tool call streams as OpenAI tool-call deltas (``tool_calls``) with finish_reason "tool_calls"."""
        params = dict(params)
        guide = Guide.from_dict(params.pop("guide", None))
        generation = GenerationParams(**params)
        try:
            prompt_ids = self.model.prompt_ids(render_messages(messages, guide))
            plain = render_messages(messages, Guide())  # one per message, for the per-message token counts
        except Exception as exc:  # the chat template rejects malformed conversations
            raise InvalidInput(f"The messages cannot be formatted for the model: {exc}", "messages") from exc
        grammar = None
        if guide.constrained:
            try:
                grammar = await asyncio.to_thread(self.grammars.compile_guide, guide)
            except ValueError as exc:
                raise InvalidInput(str(exc), "tools" if guide.calls_tools else "response_format") from exc
        limit = min(self.limits.max_prompt_tokens, self.model.context_length - generation.max_tokens)
        if len(prompt_ids) > limit:
            raise InputTooLarge(
                f"The prompt has {len(prompt_ids)} tokens. With max_tokens={generation.max_tokens} at most "
                f"{limit} prompt tokens are accepted.",
                "messages",
            )
        yield {"prompt_tokens": len(prompt_ids), "message_tokens": [self.model.count_tokens(m["content"]) for m in plain]}
        splitter = ReplySplitter() if guide.calls_tools else None
        tags = {"model": self.MODEL}
        if prompt_ids:
            self.metrics.prompt_tokens.inc(len(prompt_ids), tags=tags)
        started = last = time.perf_counter()
        finish_reason, completion_tokens, chunks = "cancelled", 0, 0
        # Not made current: a generator's context belongs to its consumer between items.
        span = tracing.tracer().start_span(f"{self.MODEL}.forward", attributes={"raydio.prompt_tokens": len(prompt_ids)})
        try:
            # aclosing: a client that goes away closes this generator, and with it the engine's stream, which
            # frees the batch slot before the next decode step.
            constraint = grammar.constraint() if grammar is not None else None
            async with contextlib.aclosing(self.model.engine.generate(prompt_ids, generation, constraint)) as steps:
                async for delta in steps:
                    now = time.perf_counter()
                    if delta.text:
                        chunks += 1
                        if last == started:
                            self.metrics.time_to_first_token.observe(now - started, tags=tags)
                            span.add_event("first token")
                        else:
                            self.metrics.time_between_tokens.observe(now - last, tags=tags)
                        last = now
                    text, calls, reason = delta.text, [], delta.finish_reason
                    if splitter is not None:
                        text, calls = splitter.feed(delta.text)
                        if reason:
                            text += splitter.finish()
                            reason = "tool_calls" if reason == "stop" and splitter.call_complete else reason
                    if reason:
                        finish_reason, completion_tokens = reason, delta.completion_tokens
                    yield {"text": text, "tool_calls": calls, "finish_reason": reason,
                           "completion_tokens": delta.completion_tokens}
        finally:
            span.set_attribute("raydio.completion_tokens", completion_tokens or chunks)
            span.set_attribute("raydio.finish_reason", finish_reason)
            span.end()
            if tokens := completion_tokens or chunks:  # a cancelled stream never learns the exact count
                self.metrics.generated_tokens.inc(tokens, tags={**tags, "finish_reason": finish_reason})

    @tracing.entrypoint
    def info(self) -> dict:
        return self._info(context_length=self.model.context_length, engine=self.model.engine.stats(),
                          torch_threads=torch.get_num_threads())

    def check_health(self) -> None:
        if self.model.engine is not None and (error := self.model.engine.fatal_error) is not None:
            raise RuntimeError(f"the generation engine stopped: {error!r}") from error
        super().check_health()

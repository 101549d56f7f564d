"""Text generation engines: one model, many concurrent streams.

``GenerationEngine`` is what a chat deployment talks to: ``generate(prompt_ids, params)`` returns an async
iterator of ``Delta``s, closing it cancels the generation, ``stats()`` and ``fatal_error`` feed metrics and
health checks. A GPU engine (vLLM, transformers' paged continuous batching) can replace the implementation
behind the same interface.

``BatchedEngine`` is continuous batching for any Hugging Face causal LM, in one background thread that owns
the model. Between decode steps it drops cancelled sequences and admits waiting ones (one left-padded prefill
for all of them, merged into the batch's KV cache); each step is one forward over every active sequence
(``[B, 1]`` input with a 2-D padding mask and per-row ``position_ids``); each row samples with its own
temperature, top-p and ``torch.Generator`` (so a seed reproduces a sampled text), and a row that hits EOS, a
stop string or ``max_tokens`` leaves the batch at once. Measured against transformers 5.24's
``ContinuousBatchingManager`` on this CPU before choosing it: see docs/generation.md.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from services.models import guided

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 0.7  # 0 or less: greedy
    top_p: float = 0.9
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """One streamed step: new text, and the reason generation ended on the last one."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" on the last delta, None before it (or "error", below)
    completion_tokens: int = 0  # tokens generated in all, set on the last delta


class EngineError(RuntimeError):
    """The engine cannot serve: it was stopped, or its thread died (``fatal_error`` says why)."""


class GenerationEngine(ABC):
    """Runs generations for many callers at once over one model."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def generate(self, prompt_ids: list[int], params: GenerationParams, constraint=None) -> AsyncIterator[Delta]:
        """Stream the deltas of one generation; the last carries ``finish_reason``. Closing the iterator (or
        cancelling the task that awaits it) cancels the generation and frees its place in the batch.

        ``constraint`` (a fresh ``guided.Constraint``) masks every step to its grammar; the generation then ends
        ("stop") when the grammar is complete, and ``params.stop`` is ignored (a stop string could cut it)."""

    @abstractmethod
    def stream(self, prompt_ids: list[int], params: GenerationParams, constraint=None) -> Iterator[Delta]:
        """The same as ``generate`` for synchronous callers (scripts, tests, benchmarks)."""

    @abstractmethod
    def stats(self) -> dict:
        """``active``, ``waiting``, ``steps`` and ``last_batch_size``, for metrics and ``info()``."""

    @property
    @abstractmethod
    def fatal_error(self) -> BaseException | None:
        """Why the engine stopped serving, or None while it is healthy."""


_ids = itertools.count()


@dataclass(eq=False)
class _Sequence:
    """One generation's state; owned by the engine thread once admitted."""

    prompt_ids: list[int]
    params: GenerationParams
    deliver: Callable[[Delta | BaseException], None]
    id: int = field(default_factory=lambda: next(_ids))
    generator: torch.Generator | None = None
    constraint: object | None = None  # guided.Constraint: one per sequence, advanced by the engine thread
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    cancelled: bool = False  # set by the consumer's thread; read by the engine between steps
    finished: bool = False


class BatchedEngine(GenerationEngine):
    """Continuous batching over a ``DynamicCache`` in one background thread (see the module docstring).

    ``tokenizer`` decodes in the engine thread: give the engine its own instance, since Hugging Face fast
    tokenizers are not safe to share with a thread that encodes at the same time.
    """

    def __init__(self, model, tokenizer, device: torch.device | str = "cpu", max_batch_size: int = 16,
                 max_batch_tokens: int | None = None, eos_token_ids: set[int] | None = None) -> None:
        """``max_batch_size``: most rows in one decode step. ``max_batch_tokens``: bound on the padded cache,
        rows × the longest row's prompt + max_tokens; a request that would exceed it waits (one always runs).
        ``eos_token_ids``: tokens that end a generation; by default the tokenizer's EOS and end of turn."""
        if max_batch_size < 1:
            raise ValueError(f"Got max_batch_size={max_batch_size}. It must be at least 1.")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"Got max_batch_tokens={max_batch_tokens}. It must be at least 1 (or None: no bound).")
        self.max_batch_tokens = max_batch_tokens
        self.model, self.tokenizer = model, tokenizer
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.eos_token_ids = eos_token_ids if eos_token_ids is not None else default_eos_ids(tokenizer)
        self._wake = threading.Condition()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._fatal: BaseException | None = None
        # The batch: row i of every tensor below belongs to self._rows[i].
        self._rows: list[_Sequence] = []
        self._cache = None  # DynamicCache, keys/values [B, heads, T, head_dim], left-padded
        self._mask: torch.Tensor | None = None  # [B, T] 1 where the cache holds a real token
        self._next: torch.Tensor | None = None  # [B, 1] the token each row feeds next
        self._positions: torch.Tensor | None = None  # [B] its position id (real tokens before it)
        self._active = 0  # admitted and not finished, including a prefill in progress
        self._steps = 0
        self._last_batch_size = 0

    # ---- caller side (any thread / event loop) ----

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="generation-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def fatal_error(self) -> BaseException | None:
        return self._fatal

    def stats(self) -> dict:
        return {"active": self._active, "waiting": len(self._waiting), "steps": self._steps,
                "last_batch_size": self._last_batch_size, "max_batch_size": self.max_batch_size,
                "max_batch_tokens": self.max_batch_tokens}

    async def generate(self, prompt_ids: list[int], params: GenerationParams, constraint=None) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()

        def deliver(item):
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        sequence = self._submit(prompt_ids, params, deliver, constraint)
        try:
            while True:
                item = _delta(await deltas.get())
                yield item
                if item.finish_reason:
                    return
        finally:
            self._cancel(sequence)

    def stream(self, prompt_ids: list[int], params: GenerationParams, constraint=None) -> Iterator[Delta]:
        deltas: queue.SimpleQueue = queue.SimpleQueue()
        sequence = self._submit(prompt_ids, params, deltas.put, constraint)
        try:
            while True:
                item = _delta(deltas.get())
                yield item
                if item.finish_reason:
                    return
        finally:
            self._cancel(sequence)

    def _submit(self, prompt_ids: list[int], params: GenerationParams, deliver, constraint=None) -> _Sequence:
        if not prompt_ids:
            raise ValueError("Got an empty prompt. Generation needs at least one prompt token.")
        if params.max_tokens < 1:
            raise ValueError(f"Got max_tokens={params.max_tokens}. It must be at least 1.")
        vocab = self.model.config.vocab_size
        if not all(0 <= i < vocab for i in prompt_ids):
            raise ValueError(f"Got a prompt token id outside the vocabulary. Token ids must be in [0, {vocab}).")
        if constraint is not None and constraint.tokens:
            raise ValueError("Got a constraint that has already been used. Each generation needs a fresh one.")
        sequence = _Sequence(list(prompt_ids), params, deliver, constraint=constraint)
        with self._wake:
            if self._fatal is not None or self._stopping or self._thread is None:
                raise EngineError("The generation engine is not running.") from self._fatal
            self._waiting.append(sequence)
            self._wake.notify()
        return sequence

    def _cancel(self, sequence: _Sequence) -> None:
        if not sequence.finished:
            sequence.cancelled = True  # the engine drops the row before its next step
            with self._wake:
                self._wake.notify()

    # ---- engine thread ----

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._wake:
                        while not (self._stopping or self._waiting or self._rows):
                            self._wake.wait()
                        if self._stopping:
                            break
                    self._retire([row for row in self._rows if row.cancelled])
                    self._admit()
                    if self._rows:
                        self._step()
        except BaseException as exc:  # noqa: BLE001 - reported through fatal_error and to every waiting caller
            logger.exception("generation engine failed")
            self._fatal = exc
        with self._wake:
            self._stopping = True
            pending = self._rows + list(self._waiting)
            self._waiting.clear()
        self._rows, self._cache = [], None
        for sequence in pending:
            if not sequence.finished:
                sequence.finished = True
                self._send(sequence, self._fatal or EngineError("The generation engine stopped."))
        self._active = 0

    def _admit(self) -> None:
        """Prefill the waiting sequences that fit (one left-padded forward) and merge them into the batch."""
        admitted: list[_Sequence] = []
        longest = max((_span(row) for row in self._rows), default=0)
        with self._wake:
            while self._waiting and len(self._rows) + len(admitted) < self.max_batch_size:
                sequence = self._waiting[0]
                rows = len(self._rows) + len(admitted)
                if (rows and self.max_batch_tokens is not None
                        and (rows + 1) * max(longest, _span(sequence)) > self.max_batch_tokens):
                    break  # it waits for rows to leave
                self._waiting.popleft()
                if not sequence.cancelled:
                    admitted.append(sequence)
                    longest = max(longest, _span(sequence))
            self._active += len(admitted)
        if not admitted:
            return
        for sequence in admitted:
            sequence.generator = torch.Generator(device=self.device)
            if sequence.params.seed is not None:
                sequence.generator.manual_seed(sequence.params.seed)
            else:
                sequence.generator.seed()
        width = max(len(s.prompt_ids) for s in admitted)
        input_ids = torch.zeros(len(admitted), width, dtype=torch.long)
        mask = torch.zeros(len(admitted), width, dtype=torch.long)
        for i, sequence in enumerate(admitted):
            input_ids[i, width - len(sequence.prompt_ids):] = torch.tensor(sequence.prompt_ids)
            mask[i, width - len(sequence.prompt_ids):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        try:
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1)
        except Exception as exc:  # noqa: BLE001 - the batch is untouched: fail these requests, not the engine
            logger.exception("prefill of %d request(s) failed", len(admitted))
            for sequence in admitted:
                self._mark_finished(sequence)
                self._send(sequence, exc)
            return
        tokens = self._sample(out.logits[:, -1], admitted)
        joining = [i for i, (sequence, token) in enumerate(zip(admitted, tokens, strict=True)) if not self._accept(sequence, token)]
        if not joining:
            return
        index = torch.tensor(joining, device=self.device)
        cache = out.cache
        if len(joining) < len(admitted):
            cache.batch_select_indices(index)
        self._merge(cache, mask[index], torch.tensor([tokens[i] for i in joining], device=self.device),
                    positions[index, -1] + 1, [admitted[i] for i in joining])

    def _merge(self, cache, mask: torch.Tensor, next_tokens: torch.Tensor, positions: torch.Tensor,
               rows: list[_Sequence]) -> None:
        if not self._rows:
            self._cache, self._mask = cache, mask
            self._next, self._positions, self._rows = next_tokens[:, None], positions, rows
            return
        old, new = self._mask.shape[1], mask.shape[1]
        width = max(old, new)
        for ours, theirs in zip(self._cache.layers, cache.layers, strict=True):
            ours.keys = torch.cat([_pad_left(ours.keys, width - old), _pad_left(theirs.keys, width - new)])
            ours.values = torch.cat([_pad_left(ours.values, width - old), _pad_left(theirs.values, width - new)])
        self._mask = torch.cat([F.pad(self._mask, (width - old, 0)), F.pad(mask, (width - new, 0))])
        self._next = torch.cat([self._next, next_tokens[:, None]])
        self._positions = torch.cat([self._positions, positions])
        self._rows = self._rows + rows

    def _step(self) -> None:
        """One decode step over every active row; rows that finish leave the batch."""
        batch = len(self._rows)
        mask = torch.cat([self._mask, self._mask.new_ones(batch, 1)], dim=1)
        out = self.model(input_ids=self._next, attention_mask=mask, position_ids=self._positions[:, None],
                         cache=self._cache, use_cache=True, logits_to_keep=1)
        self._cache, self._mask = out.cache, mask
        self._steps += 1
        self._last_batch_size = batch
        tokens = self._sample(out.logits[:, -1], self._rows)
        self._next = torch.tensor(tokens, device=self.device)[:, None]
        self._positions = self._positions + 1
        self._retire([row for row, token in zip(self._rows, tokens, strict=True) if self._accept(row, token)])

    def _retire(self, leaving: list[_Sequence]) -> None:
        """Drop finished or cancelled rows from the batch, and the cache columns no remaining row needs."""
        if not leaving:
            return
        gone = {row.id for row in leaving}
        keep = [i for i, row in enumerate(self._rows) if row.id not in gone]
        for row in leaving:
            self._mark_finished(row)
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._next = self._positions = None
            return
        index = torch.tensor(keep, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask, self._next, self._positions = self._mask[index], self._next[index], self._positions[index]
        first = int(self._mask.any(0).nonzero()[0])  # leading columns that are padding in every row
        if first:
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def _sample(self, logits: torch.Tensor, rows: list[_Sequence]) -> list[int]:
        """Each row's next token with its own settings; greedy rows share one argmax. Constrained rows are masked
        to their grammar first (one bitmask for all of them); unconstrained rows pay nothing."""
        logits = logits.float()
        constrained = [i for i, row in enumerate(rows) if row.constraint is not None]
        if constrained:
            self._mask_constrained(logits, rows, constrained)
        tokens = logits.argmax(-1).tolist()
        for i, row in enumerate(rows):
            if row.params.temperature > MIN_SAMPLING_TEMPERATURE:
                tokens[i] = sample_token(logits[i], row.params, row.generator)
        return tokens

    def _mask_constrained(self, logits: torch.Tensor, rows: list[_Sequence], constrained: list[int]) -> None:
        vocab = rows[constrained[0]].constraint.vocab_size
        bitmask = guided.allocate_bitmask(len(constrained), vocab)
        guided.fill_bitmasks([(rows[i].constraint, j) for j, i in enumerate(constrained)], bitmask)
        if len(constrained) == len(rows):
            guided.apply_bitmask(logits[:, :vocab], bitmask)
            logits[:, vocab:] = float("-inf")  # a model vocabulary wider than the tokenizer's: padding ids
            return
        index = torch.tensor(constrained, device=logits.device)
        part = logits.index_select(0, index)
        guided.apply_bitmask(part[:, :vocab], bitmask)
        part[:, vocab:] = float("-inf")
        logits.index_copy_(0, index, part)

    def _accept(self, sequence: _Sequence, token: int) -> bool:
        """Record a sampled token and stream what it makes safe to show; True when the sequence is done."""
        if sequence.cancelled:
            self._mark_finished(sequence)
            return True
        params, constraint = sequence.params, sequence.constraint
        if token in self.eos_token_ids:
            text = self.tokenizer.decode(sequence.generated, skip_special_tokens=True)
            return self._finish(sequence, text[len(sequence.emitted):], "stop")
        stops = params.stop if constraint is None else ()
        if constraint is not None:
            try:
                constraint.advance(token)
            except guided.ConstraintError as exc:  # a bug, not the caller's: fail this request, keep the batch
                logger.error("constrained row %d: %s", sequence.id, exc)
                self._mark_finished(sequence)
                self._send(sequence, exc)
                return True
        sequence.generated.append(token)
        text = self.tokenizer.decode(sequence.generated, skip_special_tokens=True)
        stop_at = _find_stop(text, stops)
        if stop_at is not None:
            return self._finish(sequence, text[len(sequence.emitted):stop_at], "stop")
        if constraint is not None and constraint.is_terminated():
            return self._finish(sequence, text[len(sequence.emitted):], "stop")
        if len(sequence.generated) >= params.max_tokens:
            return self._finish(sequence, text[len(sequence.emitted):], "length")
        # Hold back an incomplete UTF-8 sequence and any text that may be the start of a stop string.
        safe = _safe_prefix(text, stops)
        if len(safe) > len(sequence.emitted):
            self._send(sequence, Delta(safe[len(sequence.emitted):]))
            sequence.emitted = safe
        return False

    def _mark_finished(self, sequence: _Sequence) -> None:
        if not sequence.finished:
            sequence.finished = True
            self._active -= 1

    def _finish(self, sequence: _Sequence, text: str, reason: str) -> bool:
        self._mark_finished(sequence)
        self._send(sequence, Delta(text, reason, len(sequence.generated)))
        return True

    @staticmethod
    def _send(sequence: _Sequence, item: Delta | BaseException) -> None:
        try:
            sequence.deliver(item)
        except RuntimeError:  # the caller's event loop is closed: nobody is listening any more
            sequence.cancelled = True


def _delta(item: Delta | BaseException) -> Delta:
    """What the engine thread delivered: a delta, or the error that stopped it (raised here, in the consumer)."""
    if isinstance(item, BaseException):
        raise EngineError("The generation engine failed.") from item
    return item


def _span(sequence: _Sequence) -> int:
    """Cache columns a sequence may need: its prompt and every token it may generate."""
    return len(sequence.prompt_ids) + sequence.params.max_tokens


def _pad_left(states: torch.Tensor, columns: int) -> torch.Tensor:
    """Zero key/value columns before the sequence axis of ``[B, heads, T, head_dim]`` (masked out anyway)."""
    return F.pad(states, (0, 0, columns, 0)) if columns else states


def default_eos_ids(tokenizer) -> set[int]:
    """The tokenizer's EOS and, for chat models, the end-of-turn token."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return {i for i in ids if i is not None}


MIN_SAMPLING_TEMPERATURE = 1e-6  # below it sampling is argmax (what it converges to) and cannot overflow


def sample_token(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator) -> int:
    """One token from a ``[vocab]`` row of logits: greedy at temperature 0, else nucleus (top-p) sampling."""
    # A temperature this small divides the logits into inf (NaN probabilities); it is greedy in effect anyway.
    if params.temperature <= MIN_SAMPLING_TEMPERATURE:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < params.top_p
        keep[0] = True  # the top token, always: a top_p below float32's range (5e-324) would keep nothing
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None


def _safe_prefix(text: str, stops: tuple[str, ...]) -> str:
    safe = text.rstrip("\ufffd")
    for stop in stops:
        for k in range(min(len(stop) - 1, len(safe)), 0, -1):
            if safe.endswith(stop[:k]):
                safe = safe[:-k]
                break
    return safe

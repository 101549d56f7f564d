"""Guided decoding: a per-sequence logits mask that keeps generation inside a JSON schema.

llguidance (chosen by measurement, see docs/guided-decoding.md) compiles a JSON schema into a grammar over the
tokenizer's vocabulary. A :class:`Constraint` follows one generation: before each sampling step it says which
tokens may come next, after it accepts the sampled token, and it says when the structure is complete. It holds
no model and no loop: ``generation.BatchedEngine`` keeps one per constrained row, :func:`fill_bitmasks` fills
all those rows in parallel threads, then :func:`apply_bitmask` masks the ``[rows, vocab]`` logits in one call.
Tool calls and ``tool_choice: auto`` compile an llguidance lark grammar (``tool_calls.lark_grammar``).

Whitespace between JSON tokens is allowed but bounded (see COMPILE_OPTIONS). A grammar only guarantees a valid
*prefix*: if ``max_tokens`` runs out first, the text is cut (finish_reason "length") and will not parse, as with
every guided-decoding server.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.hf
import numpy as np
import torch

from services.models.tool_calls import (  # noqa: F401 - re-exported: the schema helpers live without torch
    JSON_OBJECT_SCHEMA,
    Guide,
    check_schema,
    lark_grammar,
    tool_call_schema,
)

# Whitespace between JSON tokens: one space, or one newline and an indent. Forced compact JSON pushes a 135M model
# off its habits (after "{" it wants a newline; made to write '"' it picked '",' and wrote its answer inside a
# key); free whitespace lets it put "\n\n" between every token of a tool call until max_tokens. oneOf is compiled
# as anyOf (llguidance refuses it otherwise): pydantic's discriminated unions are oneOf over branches told apart
# by a const, where the two mean the same.
COMPILE_OPTIONS: dict = {"whitespace_flexible": True, "whitespace_pattern": r"(\x20|\x0A\x20{0,16})?",
                         "coerce_one_of": True}

class ConstraintError(ValueError):
    """A token was offered that the grammar does not allow (a caller that skipped the mask)."""


def _words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def allocate_bitmask(batch_size: int, vocab_size: int) -> torch.Tensor:
    """An int32 ``[batch, ceil(vocab/32)]`` bitmask on the CPU, all tokens allowed (rows without a constraint)."""
    return torch.full((batch_size, _words(vocab_size)), -1, dtype=torch.int32)


def bitmask_to_bool(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Unpack an int32 bitmask (``[words]`` or ``[batch, words]``) to a bool CPU tensor over the vocabulary."""
    # Bit k of word w is token 32*w + k: little-endian bytes, little-endian bits.
    bits = np.unpackbits(bitmask.cpu().numpy().view(np.uint8), axis=-1, bitorder="little")
    return torch.from_numpy(bits[..., :vocab_size].astype(bool))


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set disallowed tokens' logits to -inf, in place. ``logits`` ``[vocab]`` or ``[batch, vocab]`` on any device,
    ``bitmask`` the matching int32 ``[words]`` / ``[batch, words]`` from the CPU.

    Not llguidance.torch's kernel: that one is ``torch.compile``d (seconds on first use, a C++ toolchain at run
    time). On the CPU numpy does it in one thread: torch's two-thread elementwise ops took ~100 ms a step on the
    shared, oversubscribed 2-core machine, numpy ~1 ms.
    """
    allowed = bitmask_to_bool(bitmask, logits.shape[-1])
    if logits.is_cpu and logits.dtype in (torch.float32, torch.float64, torch.float16):
        np.putmask(logits.numpy(), ~allowed.numpy(), -np.inf)
    else:
        logits.masked_fill_(~allowed.to(logits.device, non_blocking=True), float("-inf"))


class Constraint:
    """One generation's position in a compiled grammar. Not thread-safe; one per sequence."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, eos_ids: frozenset[int]) -> None:
        self.matcher = matcher  # exposed for fill_bitmasks (llguidance's parallel executor takes matchers)
        self.vocab_size = vocab_size
        self.eos_ids = eos_ids
        self.tokens = 0

    def fill_bitmask(self, bitmask: torch.Tensor, row: int = 0) -> None:
        """Write the allowed next tokens into ``bitmask[row]`` (an int32 CPU tensor from :func:`allocate_bitmask`)."""
        view = bitmask[row]
        if bitmask.dtype != torch.int32 or not bitmask.is_cpu or not view.is_contiguous():
            raise ValueError("the bitmask must be a contiguous int32 CPU tensor from allocate_bitmask()")
        if view.numel() != _words(self.vocab_size):
            raise ValueError(f"bitmask rows have {view.numel()} words; this vocabulary needs {_words(self.vocab_size)}")
        self.matcher.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * 4)

    def allowed(self) -> torch.Tensor:
        """Bool ``[vocab]``: the tokens allowed next (EOS among them once the structure may end)."""
        bitmask = allocate_bitmask(1, self.vocab_size)
        self.fill_bitmask(bitmask)
        return bitmask_to_bool(bitmask[0], self.vocab_size)

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Mask one sequence's ``[vocab]`` (or ``[1, vocab]``) logits in place."""
        bitmask = allocate_bitmask(1, self.vocab_size)
        self.fill_bitmask(bitmask)
        apply_bitmask(logits, bitmask[0] if logits.dim() == 1 else bitmask)

    def advance(self, token_id: int) -> None:
        """Accept the sampled token. Raises :class:`ConstraintError` for a token the mask did not allow."""
        if not self.matcher.consume_token(int(token_id)):
            raise ConstraintError(f"token {token_id} is not allowed here: {self.matcher.get_error()}")
        self.tokens += 1

    def is_terminated(self) -> bool:
        """The structure is complete and nothing but EOS may follow: stop now (finish_reason "stop")."""
        return self.matcher.is_stopped()

    def is_accepting(self) -> bool:
        """The text so far is complete (EOS allowed), though it could go on (e.g. a number's next digit)."""
        return self.matcher.is_accepting()


@dataclass(frozen=True, eq=False)
class Grammar:
    """A compiled schema; call it (or :meth:`constraint`) for a fresh :class:`Constraint` per generation."""

    schema: Mapping[str, Any]
    _template: llguidance.LLMatcher
    vocab_size: int
    eos_ids: frozenset[int]

    def constraint(self) -> Constraint:
        return Constraint(self._template.deep_copy(), self.vocab_size, self.eos_ids)

    __call__ = constraint


class GrammarCompiler:
    """Compiles JSON schemas for one tokenizer, keeping the last ``cache_size`` grammars (keyed by their JSON).

    Building the llguidance tokenizer costs ~1-2 s, so make one per model at load time; a new schema then costs
    tens of milliseconds and a cached one nothing.
    """

    def __init__(self, tokenizer, vocab_size: int | None = None, eos_ids: Iterable[int] | None = None,
                 cache_size: int = 128) -> None:
        self.vocab_size = int(vocab_size or len(tokenizer))
        eos = sorted(set(eos_ids) if eos_ids is not None else {tokenizer.eos_token_id})
        self.eos_ids = frozenset(eos)
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=self.vocab_size, eos_token=eos)
        self._cache: OrderedDict[str, Grammar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile_json_schema(self, schema: Mapping[str, Any] | None) -> Grammar:
        """The grammar of ``schema`` (``None``: any JSON object). Raises ValueError naming what is wrong."""
        schema = JSON_OBJECT_SCHEMA if schema is None else schema
        check_schema(schema)
        # Not sorted: properties are generated in the declared order (a tool call's name before its arguments).
        key = json.dumps(schema, separators=(",", ":"))
        return self._compiled("json:" + key, json.loads(key),
                              lambda: llguidance.LLMatcher.grammar_from_json_schema(key, defaults=COMPILE_OPTIONS))

    def compile_guide(self, guide: Guide) -> Grammar | None:
        """The grammar of a request's tools / tool_choice / response schema (None: unconstrained); cached by its
        grammar text. Raises ValueError naming what llguidance refuses (e.g. ``uniqueItems``)."""
        lark = lark_grammar(guide, COMPILE_OPTIONS)
        if lark is None:
            return None
        return self._compiled("lark:" + lark, guide.as_dict(), lambda: llguidance.LLMatcher.grammar_from_lark(lark))

    def _compiled(self, key: str, schema: Mapping[str, Any], grammar_text) -> Grammar:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        matcher = llguidance.LLMatcher(self._tokenizer, grammar_text())
        if matcher.is_error():
            raise ValueError(f"The JSON schema cannot be used for guided decoding: {matcher.get_error()}")
        grammar = Grammar(schema, matcher, self.vocab_size, self.eos_ids)
        with self._lock:
            self._cache[key] = grammar
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return grammar


_compilers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_compilers_lock = threading.Lock()


def compiler_for(tokenizer, vocab_size: int | None = None, eos_ids: Iterable[int] | None = None) -> GrammarCompiler:
    """The :class:`GrammarCompiler` of this tokenizer, made on first use and kept while the tokenizer lives."""
    with _compilers_lock:
        compiler = _compilers.get(tokenizer)
        if compiler is None:
            compiler = _compilers[tokenizer] = GrammarCompiler(tokenizer, vocab_size, eos_ids)
        return compiler


def compile_json_schema(tokenizer, schema: Mapping[str, Any] | None, *, vocab_size: int | None = None,
                        eos_ids: Iterable[int] | None = None) -> Grammar:
    """A :class:`Grammar` (a Constraint factory) for ``schema`` (``None``: any JSON object), cached per schema."""
    return compiler_for(tokenizer, vocab_size, eos_ids).compile_json_schema(schema)


def fill_bitmasks(rows: Sequence[tuple[Constraint, int]], bitmask: torch.Tensor) -> None:
    """Fill ``bitmask[row]`` for each ``(constraint, row)``, in llguidance's thread pool (the GIL is released)."""
    if not rows:
        return
    if bitmask.dtype != torch.int32 or not bitmask.is_cpu or not bitmask.is_contiguous():
        raise ValueError("the bitmask must be a contiguous int32 CPU tensor from allocate_bitmask()")
    batch, words = bitmask.shape
    _executor().unsafe_compute_mask_ptr([(c.matcher, row) for c, row in rows], bitmask.data_ptr(), words * 4, batch)


_executor_instance: llguidance.LLExecutor | None = None


def _executor() -> llguidance.LLExecutor:
    global _executor_instance
    if _executor_instance is None:
        _executor_instance = llguidance.LLExecutor()
    return _executor_instance

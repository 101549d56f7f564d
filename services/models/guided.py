"""Guided decoding: a per-sequence logits mask that keeps generation inside a JSON schema.

llguidance (chosen by measurement, see docs/guided-decoding.md) compiles a JSON schema into a grammar over the
tokenizer's vocabulary. A :class:`Constraint` follows one generation: before each sampling step it says which
tokens may come next, after it accepts the sampled token, and it says when the structure is complete. It holds
no model and no loop, so the same object serves the single-stream loop here (:func:`generate_constrained`) and a
batched engine (one constraint per row; :func:`fill_bitmasks` fills all rows in parallel threads, then
:func:`apply_bitmask` masks the ``[batch, vocab]`` logits in one call).

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

import jsonschema
import llguidance
import llguidance.hf
import numpy as np
import torch

# "Any JSON object": response_format {"type": "json_object"}.
JSON_OBJECT_SCHEMA: dict = {"type": "object"}

# Whitespace between JSON tokens: one space, or one newline and an indent. Forced compact JSON pushes a 135M model
# off its habits (after "{" it wants a newline; made to write '"' it picked '",' and wrote its answer inside a
# key); free whitespace lets it put "\n\n" between every token of a tool call until max_tokens. oneOf is compiled
# as anyOf (llguidance refuses it otherwise): pydantic's discriminated unions are oneOf over branches told apart
# by a const, where the two mean the same.
COMPILE_OPTIONS: dict = {"whitespace_flexible": True, "whitespace_pattern": r"(\x20|\x0A\x20{0,16})?",
                         "coerce_one_of": True}

_TOOL_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


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
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        grammar_text = llguidance.LLMatcher.grammar_from_json_schema(key, defaults=COMPILE_OPTIONS)
        matcher = llguidance.LLMatcher(self._tokenizer, grammar_text)
        if matcher.is_error():
            raise ValueError(f"The JSON schema cannot be used for guided decoding: {matcher.get_error()}")
        grammar = Grammar(json.loads(key), matcher, self.vocab_size, self.eos_ids)
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


def check_schema(schema: Any) -> None:
    """Raise ValueError unless ``schema`` is a JSON schema object (checked against its metaschema)."""
    if not isinstance(schema, Mapping):
        raise ValueError(f"Got {type(schema).__name__} for the JSON schema. It must be a JSON object.")
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The JSON schema is not JSON-serialisable: {exc}") from None
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"Invalid JSON schema at {where}: {exc.message}") from None


def tool_call_schema(tools: Sequence[Mapping[str, Any]], choice: str | Mapping[str, Any] = "required") -> dict:
    """The JSON schema of one call of a declared tool: ``{"name": <tool>, "arguments": {...}}``.

    ``tools`` are OpenAI tool objects (``{"type": "function", "function": {"name", "parameters", ...}}``) or bare
    function objects. ``choice`` is ``"required"`` (any declared tool) or a named function
    (``{"type": "function", "function": {"name": ...}}`` or the bare name). ``"auto"`` and ``"none"`` are not
    constraints (the model may answer in text) and raise ValueError. Each branch fixes ``name`` with ``const``, so
    the branches are disjoint and ``anyOf`` validates exactly like ``oneOf``.
    """
    functions: dict[str, Mapping[str, Any]] = {}
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, Mapping):
            raise ValueError(f"Got {type(tool).__name__} for tools[{i}]. It must be an object.")
        if tool.get("type", "function") != "function":
            raise ValueError(f"Got {tool.get('type')!r} for tools[{i}].type. Only 'function' tools are supported.")
        function = tool.get("function", tool)
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not set(name) <= _TOOL_NAME_CHARS:
            raise ValueError(f"Got {name!r} for tools[{i}].function.name. It must be 1-64 of a-z, A-Z, 0-9, _ and -.")
        if name in functions:
            raise ValueError(f"Got the tool name {name!r} twice. Tool names must be unique.")
        functions[name] = function
    if not functions:
        raise ValueError("A tool call needs at least one declared tool; tools is empty.")

    if choice == "required":
        names = list(functions)
    elif choice in ("auto", "none"):
        raise ValueError(f"tool_choice {choice!r} does not constrain the output; only 'required' or a function does.")
    else:
        name = choice if isinstance(choice, str) else (choice.get("function") or {}).get("name")
        if name not in functions:
            raise ValueError(f"Got {name!r} for tool_choice. It must name a declared tool: {', '.join(functions)}.")
        names = [name]

    branches = []
    for name in names:
        parameters = functions[name].get("parameters")
        if parameters is None:  # OpenAI: omitted parameters means the function takes none
            parameters = {"type": "object", "properties": {}, "additionalProperties": False}
        check_schema(parameters)
        if parameters.get("type", "object") != "object":
            raise ValueError(f"Got {parameters.get('type')!r} for the type of {name}'s parameters. It must be 'object'.")
        branches.append({
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": {"type": "object", **parameters}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def parse_tool_call(text: str) -> tuple[str, dict]:
    """``(name, arguments)`` of a constrained tool-call output."""
    call = json.loads(text)
    return call["name"], call["arguments"]


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


@torch.inference_mode()
def generate_constrained(chat_model, prompt_ids: list[int], constraint: Constraint, params) -> str:
    """Reference loop: ChatModel's single-stream sampling with the constraint's mask applied before each sample.

    Stops when the constraint is terminated or EOS is sampled (allowed only where the structure may end), or at
    ``params.max_tokens`` (then the text is a valid prefix, not a whole document). ``params.stop`` is ignored: a
    stop string could cut the structure. Returns the generated text.
    """
    model, tokenizer = chat_model._model, chat_model.tokenizer
    device = chat_model.device
    generator = torch.Generator(device=device)
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    eos_ids = chat_model._eos_ids() | constraint.eos_ids
    bitmask = allocate_bitmask(1, constraint.vocab_size)
    input_ids = torch.tensor([prompt_ids], device=device)
    cache, generated = None, []
    for _ in range(params.max_tokens):
        with chat_model._lock:
            out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        logits = out.logits[0, -1].float()
        constraint.fill_bitmask(bitmask)
        apply_bitmask(logits[: constraint.vocab_size], bitmask[0])
        logits[constraint.vocab_size:] = float("-inf")  # padding rows of a model vocabulary wider than the tokenizer
        token = chat_model._sample(logits, params, generator)
        if token in eos_ids:
            break
        constraint.advance(token)
        generated.append(token)
        if constraint.is_terminated():
            break
        input_ids = torch.tensor([[token]], device=device)
    return tokenizer.decode(generated, skip_special_tokens=True)

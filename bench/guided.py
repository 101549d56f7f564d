"""Guided-decoding libraries side by side on SmolLM2-135M-Instruct: compile time, per-token mask cost, validity.

    python -m bench.guided [--prompts 10] [--max-tokens 96] [--only xgrammar,llguidance] [--probes-only]
    python -m bench.guided --engine [--batch 8] [--max-tokens 48]

Every candidate that imports is measured with the same model, prompts, schema and sampling loop; a missing one
is reported as such. Only the chosen library is pinned in requirements.txt; to measure the others without
touching the shared venv, install them beside it (no dependency of theirs changes a pinned package):

    pip install --no-deps --target /tmp/guided-cands xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 \\
        llguidance==1.9.1 lm-format-enforcer==0.11.3 interegular==0.3.3 outlines_core==0.2.14
    PYTHONPATH=/tmp/guided-cands:. HF_HUB_OFFLINE=1 python -m bench.guided

Columns: ``setup`` is the once-per-tokenizer cost (vocabulary preprocessing), ``compile`` the cost of one new
schema (cold: a fresh compiler, no cache), ``mask`` the time to compute the allowed-token set for one step and
apply it to the logits (mean and p99 over every step of every run), ``forward`` the model's own step for
comparison, ``valid`` how many outputs parsed and validated (jsonschema) out of the runs, greedy and sampled.
``--probes-only`` skips generation: the mask cost is then measured replaying a fixed valid document (no model
forward between steps, so less noise from a busy machine), and the enforcement probes run (a second table).
``--engine`` measures raydio's own path instead: ``--batch`` requests at once through ``BatchedEngine``, all
unconstrained, then all constrained to SCHEMA, then half and half; per decode step the time of the whole step
and of the mask (filling one bitmask for the constrained rows and applying it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version

import jsonschema
import torch

from services.config import default_model, get_settings
from services.models import guided, sources
from services.models.chat import ChatModel, GenerationParams
from services.models.generation import BatchedEngine, default_eos_ids, sample_token

# A typical structured-output schema: a few typed fields, an enum, a bounded array, bounded strings (a 135M model
# without bounds can stay inside a string until max_tokens; the schema is the user's lever for that).
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "city": {"type": "string", "maxLength": 30},
        "role": {"type": "string", "enum": ["engineer", "artist", "teacher", "doctor", "other"]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "role", "hobbies"],
    "additionalProperties": False,
}

PROMPTS = [
    "Describe a fictional person who lives in Paris.",
    "Make up a character for a novel set in Tokyo.",
    "Invent a retired teacher from a small village.",
    "Give me a profile of a young engineer in Berlin.",
    "Create a doctor who loves the mountains.",
    "Tell me about an artist who paints the sea.",
    "Describe your best friend.",
    "Who is the mayor of an imaginary town?",
    "A person who collects stamps and plays chess.",
    "Profile a 70-year-old marathon runner from Nairobi.",
    "Describe a student who is learning to cook.",
    "Invent a musician from New Orleans.",
]


def system_prompt(schema: dict) -> str:
    return "Answer with a JSON object only, matching this JSON schema: " + json.dumps(schema)


class Candidate:
    """One library behind the four operations a decoding loop needs."""

    name = ""
    version = ""

    def setup(self, tokenizer, vocab_size: int, eos_ids: list[int]) -> None: ...
    def compile(self, schema: dict): ...
    def start(self, compiled, prompt_ids: list[int]): ...
    def mask(self, state, logits: torch.Tensor) -> None: ...  # logits [1, vocab], in place
    def advance(self, state, token: int) -> None: ...


class XGrammar(Candidate):
    name = "xgrammar"

    def setup(self, tokenizer, vocab_size, eos_ids):
        import xgrammar as xgr

        self.xgr, self.version = xgr, version("xgrammar")
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=eos_ids)
        self.vocab_size = vocab_size

    def compile(self, schema):
        compiler = self.xgr.GrammarCompiler(self.info, cache_enabled=False)
        return compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))

    def start(self, compiled, prompt_ids):
        return self.xgr.GrammarMatcher(compiled), self.xgr.allocate_token_bitmask(1, self.vocab_size)

    def mask(self, state, logits):
        matcher, bitmask = state
        matcher.fill_next_token_bitmask(bitmask)
        self.xgr.apply_token_bitmask_inplace(logits, bitmask)

    def advance(self, state, token):
        assert state[0].accept_token(token), token


class LLGuidance(Candidate):
    """What raydio ships: services.models.guided (llguidance, with a plain-torch mask instead of its compiled one)."""

    name = "llguidance"

    def setup(self, tokenizer, vocab_size, eos_ids):
        from services.models import guided

        self.guided, self.version = guided, version("llguidance")
        self.compiler = guided.GrammarCompiler(tokenizer, vocab_size, eos_ids, cache_size=0)  # cold compiles

    def compile(self, schema):
        return self.compiler.compile_json_schema(schema)

    def start(self, compiled, prompt_ids):
        return compiled.constraint()

    def mask(self, state, logits):
        state.mask_logits(logits)

    def advance(self, state, token):
        state.advance(token)


class OutlinesCore(Candidate):
    name = "outlines-core"

    def setup(self, tokenizer, vocab_size, eos_ids):
        import outlines_core
        from outlines_core.kernels import torch as kernels

        self.oc, self.kernels, self.version = outlines_core, kernels, version("outlines_core")
        self.vocab_size, self.eos = vocab_size, eos_ids[0]
        # Byte-level BPE: map each token's printable form back to its bytes (outlines_core wants the bytes).
        decoder = {c: b for b, c in byte_level_alphabet().items()}
        special = set(tokenizer.all_special_ids)
        vocab: dict[bytes, list[int]] = {}
        for token, idx in tokenizer.get_vocab().items():
            if idx in special or idx >= vocab_size:
                continue
            vocab.setdefault(bytes(decoder[c] for c in token), []).append(idx)
        self.vocabulary = outlines_core.Vocabulary(self.eos, vocab)

    def compile(self, schema):
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema), whitespace_pattern="")
        return self.oc.Index(regex, self.vocabulary)

    def start(self, compiled, prompt_ids):
        return self.oc.Guide(compiled), self.kernels.allocate_token_bitmask(self.vocab_size)

    def mask(self, state, logits):
        guide, bitmask = state
        self.kernels.fill_next_token_bitmask(guide, bitmask)
        self.kernels.apply_token_bitmask_inplace(logits, bitmask)

    def advance(self, state, token):
        state[0].advance(token)


class FormatEnforcer(Candidate):
    name = "lm-format-enforcer"

    def setup(self, tokenizer, vocab_size, eos_ids):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer, TokenEnforcerTokenizerData

        self.parser_cls, self.enforcer_cls, self.version = JsonSchemaParser, TokenEnforcer, version("lm-format-enforcer")
        # lmformatenforcer.integrations.transformers does not import with transformers 5 (LogitsWarper is gone);
        # this is its build_token_enforcer_tokenizer_data, inlined.
        zero = tokenizer.encode("0")[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for idx in range(vocab_size):
            if idx in special:
                continue
            after_zero = tokenizer.decode([zero, idx])[1:]
            regular.append((idx, after_zero, len(after_zero) > len(tokenizer.decode([idx]))))

        def decode(ids):
            return tokenizer.decode(ids).rstrip("\ufffd")

        self.data = TokenEnforcerTokenizerData(regular, decode, eos_ids[0], False, vocab_size)

    def compile(self, schema):
        return schema  # parsing is lazy, character by character: there is nothing to compile ahead

    def start(self, compiled, prompt_ids):
        return self.enforcer_cls(self.data, self.parser_cls(compiled)), list(prompt_ids)

    def mask(self, state, logits):
        enforcer, sequence = state
        allowed = enforcer.get_allowed_tokens(sequence).allowed_tokens
        keep = torch.full_like(logits, float("-inf"))
        keep[:, allowed] = 0
        logits += keep

    def advance(self, state, token):
        state[1].append(token)


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte → printable character table (byte-level BPE token strings use it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


CANDIDATES: list[Callable[[], Candidate]] = [XGrammar, LLGuidance, OutlinesCore, FormatEnforcer]


# Model-free enforcement probes: (feature, schema, an instance that must be refused, one that must be accepted).
# A library that lets the invalid instance through can emit output that fails validation; one that refuses the
# schema outright at least fails loudly (counted as "refused schema").
PROBES = [
    ("required", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, {}, {"a": 1}),
    ("additionalProperties", {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
     {"a": 1, "b": 2}, {"a": 1}),
    ("enum", {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"]}, {"a": "z"}, {"a": "y"}),
    ("maximum", {"type": "object", "properties": {"a": {"type": "integer", "maximum": 130}}, "required": ["a"]},
     {"a": 200}, {"a": 42}),
    ("exclusiveMinimum", {"type": "object", "properties": {"a": {"type": "number", "exclusiveMinimum": 0}},
     "required": ["a"]}, {"a": 0}, {"a": 0.5}),
    ("minLength", {"type": "object", "properties": {"a": {"type": "string", "minLength": 3}}, "required": ["a"]},
     {"a": "x"}, {"a": "xyz"}),
    ("pattern", {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[a-z]+$"}}, "required": ["a"]},
     {"a": "A1"}, {"a": "abc"}),
    ("format date", {"type": "object", "properties": {"a": {"type": "string", "format": "date"}}, "required": ["a"]},
     {"a": "hello"}, {"a": "2024-05-01"}),
    ("minItems", {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}, "minItems": 2}},
     "required": ["a"]}, {"a": [1]}, {"a": [1, 2]}),
    ("oneOf by const", {"oneOf": [
        {"type": "object", "properties": {"name": {"const": "f"}, "arguments": {"type": "object", "properties": {
            "x": {"type": "integer"}}, "required": ["x"], "additionalProperties": False}},
         "required": ["name", "arguments"], "additionalProperties": False},
        {"type": "object", "properties": {"name": {"const": "g"}, "arguments": {"type": "object", "properties": {
            "y": {"type": "string"}}, "required": ["y"], "additionalProperties": False}},
         "required": ["name", "arguments"], "additionalProperties": False}]},
     {"name": "f", "arguments": {"y": "s"}}, {"name": "g", "arguments": {"y": "s"}}),
    ("$ref recursion", {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {
        "anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["v", "next"],
        "additionalProperties": False}}, "$ref": "#/$defs/node"},
     {"v": 1, "next": {"v": "2", "next": None}}, {"v": 1, "next": {"v": 2, "next": None}}),
    ("uniqueItems", {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"},
     "uniqueItems": True}}, "required": ["a"]}, {"a": [1, 1]}, {"a": [1, 2]}),
]


def accepts(cand: Candidate, compiled, tokenizer, instance, eos: int, vocab_size: int) -> bool:
    """Whether the constraint lets the compact JSON of ``instance`` through, token by token, then EOS."""
    text = json.dumps(instance, separators=(",", ":"))
    state = cand.start(compiled, [0])
    for token in tokenizer.encode(text, add_special_tokens=False) + [eos]:
        logits = torch.zeros(1, vocab_size)
        cand.mask(state, logits)
        if logits[0, token] == float("-inf"):
            return False
        if token != eos:
            cand.advance(state, token)
    return True


def probe(cand: Candidate, tokenizer, eos: int, vocab_size: int) -> dict[str, str]:
    """feature → "enforced" | "refused schema" | "NOT enforced" | "rejects valid" per probe."""
    verdicts = {}
    for feature, schema, bad, good in PROBES:
        assert not _valid(bad, schema) and _valid(good, schema), feature
        try:
            compiled = cand.compile(schema)
            lets_bad = accepts(cand, compiled, tokenizer, bad, eos, vocab_size)
            lets_good = accepts(cand, compiled, tokenizer, good, eos, vocab_size)
        except Exception:  # noqa: BLE001 — a refused schema, or a matcher that errors on the input
            verdicts[feature] = "refused schema"
            continue
        verdicts[feature] = "rejects valid" if not lets_good else ("NOT enforced" if lets_bad else "enforced")
    return verdicts


def _valid(instance, schema) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(instance)


@dataclass
class Result:
    name: str
    version: str = ""
    error: str = ""
    setup_s: float = 0.0
    compile_s: float = 0.0
    mask_ms: list[float] = field(default_factory=list)
    forward_ms: list[float] = field(default_factory=list)
    valid: int = 0
    runs: int = 0
    tokens: int = 0
    samples: list[str] = field(default_factory=list)
    next_compile_s: float = 0.0
    probes: dict[str, str] = field(default_factory=dict)


@torch.inference_mode()
def run_one(chat: ChatModel, cand: Candidate, compiled, prompt: str, params: GenerationParams, result: Result) -> str:
    model = chat.torch_model
    prompt_ids = chat.prompt_ids([{"role": "system", "content": system_prompt(SCHEMA)}, {"role": "user", "content": prompt}])
    eos = default_eos_ids(chat.tokenizer)
    generator = torch.Generator().manual_seed(params.seed or 0)
    state = cand.start(compiled, prompt_ids)
    input_ids, cache, out_ids = torch.tensor([prompt_ids]), None, []
    for _ in range(params.max_tokens):
        t0 = time.perf_counter()
        out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
        t1 = time.perf_counter()
        cache, logits = out.cache, out.logits[:, -1].float()
        cand.mask(state, logits)
        result.mask_ms.append((time.perf_counter() - t1) * 1000)
        result.forward_ms.append((t1 - t0) * 1000)
        token = sample_token(logits[0], params, generator)
        if token in eos:
            break
        t2 = time.perf_counter()
        cand.advance(state, token)
        result.mask_ms[-1] += (time.perf_counter() - t2) * 1000
        out_ids.append(token)
        input_ids = torch.tensor([[token]])
    result.tokens += len(out_ids)
    return chat.tokenizer.decode(out_ids, skip_special_tokens=True)


REFERENCE = {"name": "Alice Martin", "age": 34, "city": "Paris", "role": "artist",
             "hobbies": ["painting", "reading", "chess"]}


def replay(cand: Candidate, compiled, tokenizer, vocab_size: int, result: Result, repeat: int = 20) -> None:
    tokens = tokenizer.encode(json.dumps(REFERENCE, separators=(",", ":")), add_special_tokens=False)
    for _ in range(repeat):
        state = cand.start(compiled, [0])
        for token in tokens:
            logits = torch.randn(1, vocab_size)
            t0 = time.perf_counter()
            cand.mask(state, logits)
            cand.advance(state, token)
            result.mask_ms.append((time.perf_counter() - t0) * 1000)
            assert logits[0, token] > float("-inf"), (cand.name, token)


def measure(chat: ChatModel, make: Callable[[], Candidate], prompts: list[str], max_tokens: int) -> Result:
    cand = make()
    result = Result(cand.name)
    try:
        t0 = time.perf_counter()
        cand.setup(chat.tokenizer, chat.torch_model.config.vocab_size, sorted(default_eos_ids(chat.tokenizer)))
        result.setup_s = time.perf_counter() - t0
        result.version = cand.version
        t0 = time.perf_counter()
        compiled = cand.compile(SCHEMA)
        # Some libraries compile lazily, on the first mask: count up to the first mask as the compile cost.
        cand.mask(cand.start(compiled, [0]), torch.zeros(1, chat.torch_model.config.vocab_size))
        result.compile_s = time.perf_counter() - t0
        # The cost a request with a new schema pays once the library is warm (the tool-call probe's schema).
        t0 = time.perf_counter()
        cand.mask(cand.start(cand.compile(PROBES[9][1]), [0]), torch.zeros(1, chat.torch_model.config.vocab_size))
        result.next_compile_s = time.perf_counter() - t0
        result.probes = probe(cand, chat.tokenizer, chat.tokenizer.eos_token_id, chat.torch_model.config.vocab_size)
    except Exception as exc:  # an import or API failure is a result, not a crash of the benchmark
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    if not prompts:  # model-free: the mask cost over a fixed valid document, replayed token by token
        replay(cand, compiled, chat.tokenizer, chat.torch_model.config.vocab_size, result)
    for i, prompt in enumerate(prompts):
        for temperature in (0.0, 0.7):
            params = GenerationParams(max_tokens=max_tokens, temperature=temperature, top_p=0.9, seed=i)
            text = run_one(chat, cand, compiled, prompt, params, result)
            result.runs += 1
            try:
                jsonschema.validate(json.loads(text), SCHEMA)
                result.valid += 1
            except (ValueError, jsonschema.ValidationError):
                result.samples.append(text[:120])
    return result


def table(results: list[Result]) -> str:
    lines = [
        "| library | version | setup s | first compile s | next schema s | mask ms mean | mask ms p99 "
        "| forward ms mean | valid | tokens/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | {r.version or '-'} | {r.error} |||||||")
            continue
        masks = sorted(r.mask_ms) or [float("nan")]
        p99 = masks[min(len(masks) - 1, int(len(masks) * 0.99))]
        lines.append(
            f"| {r.name} | {r.version} | {r.setup_s:.2f} | {r.compile_s:.3f} | {r.next_compile_s:.3f} | "
            f"{statistics.mean(masks):.2f} | "
            f"{p99:.2f} | {statistics.mean(r.forward_ms or [float('nan')]):.1f} | {r.valid}/{r.runs} | {r.tokens / max(1, r.runs):.0f} |"
        )
    ok = [r for r in results if not r.error]
    lines += ["", "| feature | " + " | ".join(r.name for r in ok) + " |", "|---|" + "---|" * len(ok)]
    for feature, *_ in PROBES:
        lines.append(f"| {feature} | " + " | ".join(r.probes.get(feature, "-") for r in ok) + " |")
    return "\n".join(lines)


def engine_cost(chat: ChatModel, batch: int, max_tokens: int) -> str:
    """Step and mask time of BatchedEngine with 0, half and all of ``batch`` rows constrained to SCHEMA."""
    engine = BatchedEngine(chat.torch_model, chat.tokenizer, "cpu", max_batch_size=batch)
    compiler = guided.GrammarCompiler(chat.tokenizer, chat.torch_model.config.vocab_size, engine.eos_token_ids)
    grammar = compiler.compile_json_schema(SCHEMA)
    step_ms: list[float] = []
    mask_ms: list[float] = []
    step, mask = engine._step, engine._mask_constrained

    def timed_step():
        t0 = time.perf_counter()
        step()
        step_ms.append((time.perf_counter() - t0) * 1000)

    def timed_mask(*args):
        t0 = time.perf_counter()
        mask(*args)
        mask_ms.append((time.perf_counter() - t0) * 1000)

    engine._step, engine._mask_constrained = timed_step, timed_mask
    engine.start()
    prompts = [chat.prompt_ids([{"role": "system", "content": system_prompt(SCHEMA)}, {"role": "user", "content": p}])
               for p in (PROMPTS * batch)[:batch]]
    lines = ["| constrained rows | steps | step ms median | step ms p90 | mask ms median | mask ms p90 | valid |",
             "|---|---|---|---|---|---|---|"]
    try:
        for constrained in (0, batch // 2, batch):
            step_ms.clear()
            mask_ms.clear()
            streams = [engine.stream(ids, GenerationParams(max_tokens=max_tokens, temperature=0.7, seed=i),
                                     grammar() if i < constrained else None) for i, ids in enumerate(prompts)]
            # Start every stream before reading any, so they share the batch.
            firsts = [next(s) for s in streams]
            texts = [first.text + "".join(d.text for d in s) if not first.finish_reason else first.text
                     for first, s in zip(firsts, streams, strict=True)]
            valid = sum(_valid_text(t) for t in texts[:constrained])
            q = statistics.quantiles
            lines.append(f"| {constrained}/{batch} | {len(step_ms)} | {statistics.median(step_ms):.1f} | "
                         f"{q(step_ms, n=10)[-1]:.1f} | "
                         + (f"{statistics.median(mask_ms):.2f} | {q(mask_ms, n=10)[-1]:.2f} | {valid}/{constrained} |"
                            if mask_ms else "- | - | - |"))
    finally:
        engine.stop()
    return "\n".join(lines)


def _valid_text(text: str) -> bool:
    try:
        return _valid(json.loads(text), SCHEMA)
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--only", default="", help="comma-separated library names")
    parser.add_argument("--probes-only", action="store_true", help="compile and enforcement probes, no generation")
    parser.add_argument("--engine", action="store_true", help="raydio's BatchedEngine: step and mask cost per step")
    parser.add_argument("--batch", type=int, default=8, help="with --engine: concurrent requests")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cache_dir = get_settings().cache_dir
    chat = ChatModel(sources.resolve(default_model("chat").source, cache_dir), cache_dir, "cpu").load(start_engine=False)
    if args.engine:
        print(engine_cost(chat, args.batch, args.max_tokens))
        return
    chosen = [c for c in CANDIDATES if not args.only or c.name in args.only.split(",")]
    results = []
    for make in chosen:
        result = measure(chat, make, [] if args.probes_only else PROMPTS[: args.prompts], args.max_tokens)
        results.append(result)
        print(f"{result.name}: done; invalid samples: {result.samples[:3]}", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()

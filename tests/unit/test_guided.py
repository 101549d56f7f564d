"""Guided decoding with the real SmolLM2-135M: whatever the small model wants to say, the output parses and validates."""

from __future__ import annotations

import json

import pytest
import torch

from services.models import guided
from services.models.chat import GenerationParams

REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 20},
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["topic", "sentiment", "score"],
    "additionalProperties": False,
}

REVIEWS = [
    "The pizza was cold and the waiter was rude.",
    "Best concert I have been to in years!",
    "The train arrived on time, nothing special.",
    "My new phone's battery dies by noon.",
    "This novel kept me up all night, wonderful.",
    "The hotel room smelled of smoke.",
    "The museum tour was informative and fun.",
    "Delivery took three weeks and the box was crushed.",
    "A decent coffee, a bit pricey.",
    "The kids loved the playground at the park.",
    "The software update broke my printer driver.",
    "Friendly staff, clean rooms, great breakfast.",
    "The movie was too long and the plot was thin.",
    "The bike repair shop fixed it in ten minutes.",
    "Customer support never answered my emails.",
    "The garden looks beautiful in spring.",
    "The exam was fair but very long.",
    "The new bakery's croissants are perfect.",
    "Traffic on the highway was terrible today.",
    "The yoga class was relaxing.",
]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "description": "The current time"}},  # no parameters
]
# Generation on 2 shared cores can be slow; the limit only stops a hung test (no timing is asserted).
pytestmark = pytest.mark.timeout(900)

@pytest.fixture(scope="module")
def chat(deployments):
    return deployments["chat"].model  # the chat deployment's model and engine: one load for all unit tests


@pytest.fixture(scope="module")
def compiler(deployments):
    return deployments["chat"].grammars


def test_json_object_mode_yields_an_object(chat, compiler):
    # "Any object" does not bound the answer's length: prompts that invite a short one, as a client would write.
    # (20 prompts against a schema, tool calls: tests/unit/test_tool_calls.py, through the engine and the core.)
    system = 'Answer with a JSON object like {"answer": "yes"}.'
    for seed, question in enumerate(["Is the sky blue?", "Do cats bark?"]):
        prompt = chat.prompt_ids([{"role": "system", "content": system}, {"role": "user", "content": question}])
        params = GenerationParams(max_tokens=48, temperature=0.0 if seed % 2 else 0.8, top_p=0.95, seed=seed)
        text = "".join(d.text for d in chat.engine.stream(prompt, params, compiler.compile_json_schema(None)()))
        assert isinstance(json.loads(text), dict), text


def test_constraint_walks_a_document_and_refuses_what_the_mask_refuses(chat, compiler):
    grammar = compiler.compile_json_schema(REVIEW_SCHEMA)
    assert compiler.compile_json_schema(json.loads(json.dumps(REVIEW_SCHEMA))) is grammar  # cached by content
    text = '{"topic":"pizza","sentiment":"negative","score":2}'
    constraint = grammar()
    for token in chat.tokenizer.encode(text, add_special_tokens=False):
        assert not constraint.is_terminated()
        assert constraint.allowed()[token]
        constraint.advance(token)
    assert constraint.is_terminated() and constraint.is_accepting()

    fresh = grammar()
    allowed = fresh.allowed()
    assert allowed.sum() < allowed.numel() // 100  # a real restriction, not a pass-through
    refused = int((~allowed).nonzero()[0])
    with pytest.raises(guided.ConstraintError, match="not allowed"):
        fresh.advance(refused)


def test_parallel_fill_matches_one_by_one(compiler):
    constraints = [compiler.compile_json_schema(s)() for s in (REVIEW_SCHEMA, None, guided.tool_call_schema(TOOLS))]
    batch = guided.allocate_bitmask(4, compiler.vocab_size)  # row 3: an unconstrained sequence
    guided.fill_bitmasks([(c, row) for row, c in enumerate(constraints)], batch)
    for row, c in enumerate(constraints):
        assert torch.equal(guided.bitmask_to_bool(batch[row], compiler.vocab_size), c.allowed())
    logits = torch.zeros(4, compiler.vocab_size)
    guided.apply_bitmask(logits, batch)
    assert torch.isinf(logits[:3]).any(dim=1).all() and not torch.isinf(logits[3]).any()


@pytest.mark.parametrize(("schema", "message"), [
    ([1, 2], "must be a JSON object"),
    ({"type": "strin"}, "Invalid JSON schema at type"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": "zero"}}}, "Invalid JSON schema at"),
    ({"type": "array", "uniqueItems": True}, "cannot be used for guided decoding.*uniqueItems"),
    ({"type": "object", "required": ["a"], "additionalProperties": False}, "cannot be used for guided decoding"),
])
def test_invalid_schema_is_a_clear_error(compiler, schema, message):
    with pytest.raises(ValueError, match=message):
        compiler.compile_json_schema(schema)


@pytest.mark.parametrize(("tools", "choice", "message"), [
    ([], "required", "at least one declared tool"),
    (TOOLS, "none", "allows no tool call"),
    (TOOLS, {"type": "function", "function": {"name": "nope"}}, "must name a declared tool"),
    (TOOLS + TOOLS[:1], "required", "twice"),
    ([{"type": "function", "function": {"name": "bad name"}}], "required", "function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], "required", "must be 'object'"),
])
def test_invalid_tools_are_a_clear_error(tools, choice, message):
    with pytest.raises(ValueError, match=message):
        guided.tool_call_schema(tools, choice)

"""Tool calls and structured output end to end, with the real SmolLM2-135M: engine, core, REST, the openai client.

The small model's choice of tool may be poor; what is asserted is that its output is never malformed: every JSON
answer validates, every tool call names a declared tool with arguments that validate.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import jsonschema
import openai
import pydantic
import pytest

from services.config import AuthArgs, IngressArgs, LimitsArgs, McpArgs
from services.core.chat import Sampling
from services.ingress.app import build_ingress_app
from services.models.generation import GenerationParams
from services.models.tool_calls import ReplySplitter, make_guide, render_messages
from tests.unit.test_guided import REVIEW_SCHEMA, REVIEWS, TOOLS
from tests.unit.test_hostile_input import _Server

# Generation on 2 shared cores can be slow; the limit only stops a hung test (no timing is asserted).
pytestmark = pytest.mark.timeout(900)

REVIEW_FORMAT = {"type": "json_schema", "json_schema": {"name": "review", "schema": REVIEW_SCHEMA, "strict": True}}
SYSTEM = "Summarise the review as JSON with topic, sentiment and score (1-5)."
TOOL_PROMPTS = ["What is the weather in Oslo?", "What is 17 plus 25?", "What time is it?", "Tell me a joke."]
PARAMETERS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object", "additionalProperties": False})
              for t in TOOLS}


@pytest.fixture(scope="module")
def deployment(deployments):
    return deployments["chat"]


def _assert_valid_call(call: dict, names=PARAMETERS) -> dict:
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] in names
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, PARAMETERS[call["function"]["name"]])
    return arguments


# --- the engine ------------------------------------------------------------------------------------------------------

async def _run(deployment, messages, guide, params: GenerationParams) -> str:
    grammar = deployment.grammars.compile_guide(guide)
    prompt = deployment.model.prompt_ids(render_messages(messages, guide))
    deltas = [d async for d in deployment.model.engine.generate(prompt, params, grammar.constraint() if grammar else None)]
    return "".join(d.text for d in deltas), deltas[-1].finish_reason


async def test_constrained_and_unconstrained_rows_share_a_batch(deployment):
    engine = deployment.model.engine
    question = [{"role": "user", "content": "What is the capital of France?"}]
    greedy = GenerationParams(max_tokens=12, temperature=0.0)
    alone, _ = await _run(deployment, question, make_guide(None, None, None), greedy)
    steps = engine.stats()["steps"]
    review = make_guide(None, None, REVIEW_FORMAT)
    results = await asyncio.gather(
        _run(deployment, question, make_guide(None, None, None), greedy),
        *(_run(deployment, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r}], review,
               GenerationParams(max_tokens=64, temperature=0.8, seed=i, stop=("}",)))
          for i, r in enumerate(REVIEWS[:3])),
    )
    assert engine.stats()["steps"] - steps < 12 + 3 * 64  # they ran together, not one after another
    assert results[0][0] == alone  # the mask of the other rows does not touch an unconstrained row
    for text, reason in results[1:]:
        assert reason == "stop"  # the grammar completed; the stop string "}" was ignored for constrained rows
        jsonschema.validate(json.loads(text), REVIEW_SCHEMA)


def test_a_used_constraint_is_refused(deployment):
    grammar = deployment.grammars.compile_guide(make_guide(None, None, {"type": "json_object"}))
    constraint = grammar.constraint()
    constraint.advance(deployment.model.tokenizer.encode("{")[0])
    with pytest.raises(ValueError, match="fresh one"):
        list(deployment.model.engine.stream([1, 2, 3], GenerationParams(max_tokens=2), constraint))


# --- the core: 20 prompts, tool_choice required, a named tool ----------------------------------------------------------

async def test_structured_output_validates_for_20_prompts(core):
    async def one(i: int, review: str):
        return await core.chat.complete(None, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": review}],
                                        sampling=Sampling(max_tokens=64, temperature=0.0 if i % 2 else 0.8, seed=i),
                                        response_format=REVIEW_FORMAT)

    answers = await asyncio.gather(*(one(i, r) for i, r in enumerate(REVIEWS)))
    assert len({a.text for a in answers}) > 5  # different prompts, different answers
    for answer in answers:
        assert answer.finish_reason == "stop", answer
        jsonschema.validate(json.loads(answer.text), REVIEW_SCHEMA)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
async def test_tool_choice_required_or_named_always_gives_a_valid_call(core, choice):
    answers = await asyncio.gather(*(
        core.chat.complete(None, [{"role": "user", "content": prompt}], tools=TOOLS, tool_choice=choice,
                           sampling=Sampling(max_tokens=48, temperature=0.8, seed=i))
        for i, prompt in enumerate(TOOL_PROMPTS)))
    for answer in answers:
        assert answer.finish_reason == "tool_calls" and answer.text == "" and len(answer.tool_calls) == 1, answer
        call = answer.tool_calls[0]
        jsonschema.validate(call.arguments, PARAMETERS[call.name])
        if choice != "required":
            assert call.name == "add"


async def test_tool_choice_auto_answers_in_text_or_with_a_valid_call(core):
    answers = await asyncio.gather(*(
        core.chat.complete(None, [{"role": "user", "content": prompt}], tools=TOOLS, tool_choice="auto",
                           sampling=Sampling(max_tokens=48, temperature=0.0))
        for prompt in TOOL_PROMPTS))
    for answer in answers:
        if answer.tool_calls:
            assert answer.finish_reason == "tool_calls" and answer.text == ""
            jsonschema.validate(answer.tool_calls[0].arguments, PARAMETERS[answer.tool_calls[0].name])
        else:
            assert answer.text and not answer.text.startswith("<"), answer


# --- REST --------------------------------------------------------------------------------------------------------------

def _chat(**body) -> dict:
    return {"model": "chat", "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
            "max_tokens": 48, "temperature": 0, **body}


def _events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


def test_streamed_tool_call_deltas_reassemble_to_the_whole_answer(client):
    whole = client.post("/v1/chat/completions", json=_chat(tools=TOOLS, tool_choice="required")).json()
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    message = whole["choices"][0]["message"]
    assert message["content"] is None and len(message["tool_calls"]) == 1
    _assert_valid_call(message["tool_calls"][0])

    with client.stream("POST", "/v1/chat/completions", json=_chat(tools=TOOLS, tool_choice="required", stream=True,
                                                                   stream_options={"include_usage": True})) as response:
        events = _events(response)
    deltas = [d for e in events for c in e["choices"] for d in c["delta"].get("tool_calls", [])]
    assert deltas[0]["id"].startswith("call_") and deltas[0]["function"]["name"] and deltas[0]["type"] == "function"
    assert all("id" not in d and "name" not in d["function"] for d in deltas[1:])
    assert len(deltas) > 2  # the arguments arrive in pieces
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert deltas[0]["function"]["name"] == message["tool_calls"][0]["function"]["name"]
    assert json.loads(arguments) == json.loads(message["tool_calls"][0]["function"]["arguments"])  # greedy: the same
    assert [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]] == ["tool_calls"]
    assert events[-1]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]


def test_a_conversation_with_a_tool_result_continues(client):
    first = client.post("/v1/chat/completions", json=_chat(tools=TOOLS, tool_choice="required")).json()
    call = first["choices"][0]["message"]["tool_calls"][0]
    messages = [{"role": "user", "content": "What is the weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 degrees."}]
    answer = client.post("/v1/chat/completions", json=_chat(messages=messages, tools=TOOLS, tool_choice="none",
                                                            max_tokens=16))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


UNIQUE = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}


@pytest.mark.parametrize(("body", "param", "needle"), [
    (_chat(tool_choice="required"), "tool_choice", "without tools"),
    (_chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice", "'nope'"),
    (_chat(tools=TOOLS, tool_choice="sometimes"), "tool_choice", "tool_choice"),
    (_chat(tools=[TOOLS[0], TOOLS[0]]), "tools", "twice"),
    (_chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]), "tools", "'array'"),
    (_chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "minProperties": "x"}}}]),
     "tools", "minProperties"),
    (_chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}),
     "response_format", "Invalid JSON schema"),
    (_chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": UNIQUE}}),
     "response_format", "uniqueItems"),  # refused by the grammar compiler, in the deployment
    (_chat(response_format={"type": "xml"}), "response_format.type", "json_schema"),
    (_chat(messages=[{"role": "tool", "content": "21 degrees"}]), "messages", "tool_call_id"),
    (_chat(messages=[{"role": "assistant", "content": None}]), "messages", "null with tool_calls"),
    (_chat(messages=[{"role": "user", "content": "hi", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]), "messages", "only assistant"),
])
def test_bad_tool_and_format_requests_are_400s_naming_the_field(client, body, param, needle):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and needle in error["message"], error


def test_the_openapi_document_describes_tools_and_response_format(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["ChatCompletionRequest"]["properties"]
    assert "tool_calls" in request["tools"]["description"] and "json_schema" in request["response_format"]["description"]
    assert "tool_calls" in schemas["ChatChoice"]["properties"]["finish_reason"]["anyOf"][0]["enum"]
    assert "tool_call_id" in schemas["ChatMessage"]["properties"]


def test_reply_splitter_streams_a_call_whatever_the_pieces():
    text = '<tool_call>{"name": "add", "arguments": {\n  "a": 1, "b": "}{\\""}}</tool_call>'
    for size in (1, 3, 7, len(text)):
        splitter, content, deltas = ReplySplitter(), "", []
        for i in range(0, len(text), size):
            piece, calls = splitter.feed(text[i:i + size])
            content, deltas = content + piece, deltas + calls
        assert content == "" and splitter.call_complete
        assert deltas[0]["function"] == {"name": "add", "arguments": ""}
        assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"a": 1, "b": '}{"'}
    splitter = ReplySplitter()
    assert splitter.feed("<tool") == ("", []) and splitter.finish() == "<tool"  # a short text that looked like a call
    assert ReplySplitter().feed("Hello") == ("Hello", [])


# --- the openai client, unchanged, against the app over a real connection ---------------------------------------------

class Review(pydantic.BaseModel):
    topic: str = pydantic.Field(max_length=20)
    sentiment: Literal["positive", "negative", "neutral"]
    score: int = pydantic.Field(ge=1, le=5)


class GetWeather(pydantic.BaseModel):
    """Current weather in a city."""

    city: str = pydantic.Field(max_length=20)


@pytest.fixture(scope="module")
def openai_client(core, unit_settings):
    args = IngressArgs(limits=LimitsArgs(max_completion_tokens=64), mount_ui=False, auth=AuthArgs(enabled=False),
                       mcp=McpArgs(allowed_hosts=("127.0.0.1:*",)))
    with _Server(build_ingress_app(core, args, unit_settings)) as running:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{running.port}/v1", api_key="unused", max_retries=0, timeout=300)


def test_openai_parse_gives_a_parsed_object(openai_client):
    completion = openai_client.chat.completions.parse(
        model="chat", response_format=Review, max_tokens=64, temperature=0,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": REVIEWS[0]}])
    review = completion.choices[0].message.parsed
    assert isinstance(review, Review) and 1 <= review.score <= 5


def test_openai_tool_calling_helpers_work_unchanged(openai_client):
    completion = openai_client.chat.completions.parse(
        model="chat", tools=[openai.pydantic_function_tool(GetWeather)], tool_choice="required", max_tokens=48,
        temperature=0, messages=[{"role": "user", "content": "What is the weather in Oslo?"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "GetWeather" and isinstance(call.function.parsed_arguments, GetWeather)

    streamed = openai_client.chat.completions.create(
        model="chat", tools=[openai.pydantic_function_tool(GetWeather)], tool_choice="required", max_tokens=48,
        temperature=0, stream=True, messages=[{"role": "user", "content": "What is the weather in Oslo?"}])
    pieces = [d for chunk in streamed for c in chunk.choices for d in (c.delta.tool_calls or [])]
    assert GetWeather.model_validate_json("".join(p.function.arguments or "" for p in pieces)) == call.function.parsed_arguments


def test_openai_client_bad_inputs_are_400s(openai_client):
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        openai_client.chat.completions.create(model="chat", tool_choice="required", max_tokens=4,
                                              messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="uniqueItems"):
        openai_client.chat.completions.create(
            model="chat", max_tokens=4, messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": UNIQUE}})


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    country: str = pydantic.Field(max_length=20)


class Trip(pydantic.BaseModel):
    """Plan a trip between two cities."""

    origin: City
    destination: City


def test_a_tool_with_nested_models_compiles_and_accepts_a_valid_call(deployment):
    # pydantic puts nested models in $defs and refers to them from the parameters' root; the call's grammar must too.
    tool = openai.pydantic_function_tool(Trip)
    guide = make_guide([tool], "required", None)
    constraint = deployment.grammars.compile_guide(guide).constraint()
    arguments = {"origin": {"name": "Oslo", "country": "Norway"}, "destination": {"name": "Rome", "country": "Italy"}}
    text = '<tool_call>{"name": "Trip", "arguments": ' + json.dumps(arguments) + "}</tool_call>"
    for token in deployment.model.tokenizer.encode(text, add_special_tokens=False):
        constraint.advance(token)
    assert constraint.is_accepting()
    jsonschema.validate(arguments, tool["function"]["parameters"])


def test_a_tool_call_turn_is_remembered_in_its_session(client):
    session = client.post("/v1/sessions", json={"title": "weather"}).json()
    first = client.post("/v1/chat/completions", json=_chat(tools=TOOLS, tool_choice="required", session_id=session["id"]))
    assert first.status_code == 200, first.text
    call = first.json()["choices"][0]["message"]["tool_calls"][0]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 degrees."}
    second = client.post("/v1/chat/completions", json=_chat(messages=[result], max_tokens=8, session_id=session["id"]))
    assert second.status_code == 200, second.text
    stored = client.get(f"/v1/sessions/{session['id']}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]

"""Chat: a conversation (stored session, agent, new messages) → generation → the answer remembered.

REST, the chat UI, MCP and ``complete`` jobs all go through ``ChatService``: the same generation parameters,
limits and session handling for every face. Tools, ``tool_choice`` and ``response_format`` (OpenAI's shapes) are
checked here and handed to the deployment, which renders the tools into the prompt and constrains generation to
a grammar (docs/guided-decoding.md); a turn that ends in a tool call has ``tool_calls`` and finish_reason
"tool_calls".
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.config import LimitsArgs, TextGenerationModelArgs
from services.core.client import ModelClient
from services.core.sessions import Conversation, SessionStore
from services.errors import InputTooLarge, InvalidInput
from services.models.tool_calls import Guide, ToolSpecError, make_guide, parse_arguments

if TYPE_CHECKING:
    from services.core.actions import ActionService

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Sampling:
    """What a caller asks for; None means "the agent's, else the model's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str  # "call_<hex>"
    name: str
    arguments: dict  # parsed, validated against the tool's JSON schema

    def as_openai(self) -> dict:
        """The OpenAI message shape: arguments as a JSON string."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments)}}


@dataclass(frozen=True)
class ChatAnswer:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class ChatTurn:
    """A generation under way. Iterate ``chunks()`` once; when it ends normally the turn is stored in the session."""

    model: str
    prompt_tokens: int
    _stream: AsyncIterator[dict]
    _remember: object = field(repr=False)
    completion_tokens: int = 0
    finish_reason: str | None = None
    text: list[str] = field(default_factory=list)
    guide: Guide = field(default_factory=Guide)
    tool_calls: list[ToolCall] = field(default_factory=list)  # filled when the stream ends with finish "tool_calls"
    # The call as streamed ({"id", "name", "arguments": JSON text}); kept when max_tokens cut it (finish "length").
    raw_tool_calls: list[dict] = field(default_factory=list)

    async def chunks(self) -> AsyncIterator[dict]:
        """``{"text", "tool_calls", "finish_reason", "completion_tokens"}`` per step; ``tool_calls`` are OpenAI
        deltas (the first names the call and its id, the next carry pieces of its JSON arguments)."""
        async for chunk in self._stream:
            self.text.append(chunk["text"])
            for delta in chunk.get("tool_calls") or ():
                self._add_call_delta(delta)
            self.finish_reason = chunk["finish_reason"] or self.finish_reason
            self.completion_tokens = chunk["completion_tokens"] or self.completion_tokens
            yield chunk
        if self.finish_reason == "tool_calls":
            self.tool_calls = [self._parsed(call) for call in self.raw_tool_calls]
        await self._remember("".join(self.text), self.completion_tokens, self.tool_calls)

    def _add_call_delta(self, delta: dict) -> None:
        if delta.get("id"):
            self.raw_tool_calls.append({"id": delta["id"], "name": delta["function"]["name"], "arguments": ""})
        self.raw_tool_calls[-1]["arguments"] += delta["function"].get("arguments") or ""

    def _parsed(self, call: dict) -> ToolCall:
        arguments = json.loads(call["arguments"])  # the grammar made it a JSON object
        try:
            parse_arguments(call["name"], call["arguments"], self.guide.functions)
        except Exception as exc:  # noqa: BLE001 - the grammar and jsonschema disagree on a corner; say so, keep it
            logger.warning("tool call %s does not validate against its schema: %s", call["name"], exc)
        return ToolCall(call["id"], call["name"], arguments)

    async def answer(self) -> ChatAnswer:
        async for _ in self.chunks():
            pass
        return ChatAnswer("".join(self.text), self.finish_reason, self.prompt_tokens, self.completion_tokens,
                          list(self.tool_calls))


def generation_params(entry: TextGenerationModelArgs, sampling: Sampling, limits: LimitsArgs,
                      agent_defaults: dict | None = None) -> dict:
    """Generation parameters for the deployment: the request's, else the agent's, else the model's; bounded."""
    agent_defaults = agent_defaults or {}
    limit = limits.max_completion_tokens
    if sampling.max_tokens is not None and sampling.max_tokens > limit:
        raise InputTooLarge(f"Got max_tokens={sampling.max_tokens}. This server generates at most {limit} tokens "
                            "per request.", "max_tokens")
    requested = sampling.max_tokens or agent_defaults.get("max_tokens")
    temperature = sampling.temperature if sampling.temperature is not None else agent_defaults.get("temperature", DEFAULT_TEMPERATURE)
    return {"max_tokens": min(requested or entry.generation.default_max_tokens, limit), "temperature": temperature,
            "top_p": sampling.top_p, "stop": tuple(sampling.stop), "seed": sampling.seed}


class ChatService:
    def __init__(self, client: ModelClient, limits: LimitsArgs, sessions: SessionStore | None = None,
                 actions: ActionService | None = None) -> None:
        self.client, self.limits, self.sessions = client, limits, sessions
        self.actions = actions  # what an agent's calls of its actions do (services/core/actions.py)
        self.catalogue = client.catalogue

    async def start(self, owner: str | None, messages: list[dict], model: str | None = None, sampling: Sampling = Sampling(),
                    session_id: str | None = None, agent: str | None = None, *, tools: list[dict] | None = None,
                    tool_choice: str | dict = "auto", response_format: dict | None = None) -> ChatTurn:
        """Validate, build the conversation and start generating; errors the model raises before its first token
        (a prompt too long, a schema the grammar compiler refuses) surface here, before a face has sent anything.

        ``tools``: OpenAI function tools; ``tool_choice``: "auto" | "none" | "required" |
        ``{"type": "function", "function": {"name"}}``; ``response_format``: ``{"type": "text" | "json_object" |
        "json_schema", "json_schema": {"name", "schema", "strict"}}``."""
        entry = self.catalogue.require(model, "text-generation")
        if not messages:
            raise InvalidInput("Send at least one message.", "messages")
        if len(messages) > self.limits.max_messages:
            raise InputTooLarge(f"Got {len(messages)} messages. At most {self.limits.max_messages} are allowed.", "messages")
        check_messages(messages)
        if (session_id is not None or agent is not None) and (self.sessions is None or owner is None):
            raise InvalidInput("Sessions and agents need an authenticated caller.", "session_id")
        if self.sessions is not None and owner is not None:
            conversation = await self.sessions.conversation(owner, session_id, messages, agent)
        else:
            conversation = Conversation(messages, 0, {})
        # In a session, an agent's actions are its tools unless the caller brings its own (docs/agents.md).
        acting = self.actions is not None and tools is None and session_id is not None and bool(conversation.actions)
        if acting:
            tools = self.actions.registry.tools(conversation.actions, conversation.tool_choice)
            tool_choice = conversation.tool_choice
        try:
            guide = make_guide(tools, tool_choice, response_format)
        except ToolSpecError as exc:
            raise InvalidInput(str(exc), exc.param) from None
        params = generation_params(entry, sampling, self.limits, conversation.agent_defaults)
        if guide.constrained:
            params["guide"] = guide.as_dict()
        stream = self.client.generate(entry.name, conversation.messages, params)
        first = await stream.__anext__()

        async def remember(answer: str, completion_tokens: int, tool_calls: list[ToolCall] = ()) -> None:
            if acting:  # the built-in `reply` is an answer in words; what remains are calls of actions
                answer, tool_calls = plain_reply(answer, tool_calls)
                turn.text[:], turn.tool_calls = [answer], list(tool_calls)
                turn.raw_tool_calls[:] = [c for c in turn.raw_tool_calls if c["name"] != "reply"]
                if turn.finish_reason == "tool_calls" and not tool_calls:
                    turn.finish_reason = "stop"
            if session_id is not None:
                reply = {"role": "assistant", "content": answer}
                if tool_calls:
                    reply["tool_calls"] = [call.as_openai() for call in tool_calls]
                # content null (an assistant's tool calls) is stored as "": the store keeps text
                sent = [{**m, "content": m.get("content") or ""} for m in messages]
                await self.sessions.append(owner, session_id, [*sent, reply],
                                           [*first["message_tokens"][conversation.new_from:], completion_tokens])
            if acting and tool_calls:  # confirmation needed: the session waits; otherwise it runs now
                await self.actions.after_turn(owner, session_id, tool_calls, conversation.agent, entry.name)

        turn = ChatTurn(entry.name, first["prompt_tokens"], stream, remember, guide=guide)
        return turn

    async def complete(self, owner: str | None, messages: list[dict], model: str | None = None,
                       sampling: Sampling = Sampling(), session_id: str | None = None, agent: str | None = None, *,
                       tools: list[dict] | None = None, tool_choice: str | dict = "auto",
                       response_format: dict | None = None) -> ChatAnswer:
        turn = await self.start(owner, messages, model, sampling, session_id, agent, tools=tools,
                                tool_choice=tool_choice, response_format=response_format)
        return await turn.answer()


def plain_reply(answer: str, tool_calls) -> tuple[str, list]:
    """An agent with ``tool_choice: required`` answers in words by calling ``reply``: its text is the answer."""
    texts = [str(call.arguments.get("text", "")) for call in tool_calls if call.name == "reply"]
    return "\n".join([answer, *texts]).strip() if texts else answer, [c for c in tool_calls if c.name != "reply"]


def check_messages(messages: list[dict]) -> None:
    """OpenAI's message shapes: text content; an assistant's ``tool_calls`` (content may then be null); a ``tool``
    message answering a call by ``tool_call_id``. A 400 naming the message otherwise."""
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidInput(f"Got {type(message).__name__} for {where}. It must be an object.", "messages")
        role, content, calls = message.get("role"), message.get("content"), message.get("tool_calls")
        if calls:
            if role != "assistant":
                raise InvalidInput(f"{where} has tool_calls; only assistant messages may.", "messages")
            for j, call in enumerate(calls):
                function = call.get("function") if isinstance(call, Mapping) else None
                if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) \
                        or not isinstance(function.get("arguments", "{}"), str | dict):
                    raise InvalidInput(f"{where}.tool_calls[{j}] must be {{'id', 'type': 'function', 'function': "
                                       "{'name', 'arguments': <JSON string>}}.", "messages")
        elif content is None or not isinstance(content, str):
            raise InvalidInput(f"Got {type(content).__name__} for {where}.content. It must be a string"
                               + (" (or null with tool_calls)." if role == "assistant" else "."), "messages")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise InvalidInput(f"{where} is a tool result without tool_call_id. Name the call it answers.", "messages")

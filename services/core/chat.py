"""Chat: a conversation (stored session, agent, new messages) → generation → the answer remembered.

REST, the chat UI, MCP and ``complete`` jobs all go through ``ChatService``: the same generation parameters,
limits and session handling for every face.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.config import LimitsArgs, TextGenerationModelArgs
from services.core.client import ModelClient
from services.core.sessions import Conversation, SessionStore
from services.errors import InputTooLarge, InvalidInput

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
class ChatAnswer:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


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

    async def chunks(self) -> AsyncIterator[dict]:
        """``{"text", "finish_reason", "completion_tokens"}`` per step."""
        async for chunk in self._stream:
            self.text.append(chunk["text"])
            self.finish_reason = chunk["finish_reason"] or self.finish_reason
            self.completion_tokens = chunk["completion_tokens"] or self.completion_tokens
            yield chunk
        await self._remember("".join(self.text), self.completion_tokens)

    async def answer(self) -> ChatAnswer:
        async for _ in self.chunks():
            pass
        return ChatAnswer("".join(self.text), self.finish_reason, self.prompt_tokens, self.completion_tokens)


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
    def __init__(self, client: ModelClient, limits: LimitsArgs, sessions: SessionStore | None = None) -> None:
        self.client, self.limits, self.sessions = client, limits, sessions
        self.catalogue = client.catalogue

    async def start(self, owner: str | None, messages: list[dict], model: str | None = None, sampling: Sampling = Sampling(),
                    session_id: str | None = None, agent: str | None = None) -> ChatTurn:
        """Validate, build the conversation and start generating; errors the model raises before its first token
        (a prompt too long, say) surface here, before a face has sent anything."""
        entry = self.catalogue.require(model, "text-generation")
        if not messages:
            raise InvalidInput("Send at least one message.", "messages")
        if len(messages) > self.limits.max_messages:
            raise InputTooLarge(f"Got {len(messages)} messages. At most {self.limits.max_messages} are allowed.", "messages")
        if (session_id is not None or agent is not None) and (self.sessions is None or owner is None):
            raise InvalidInput("Sessions and agents need an authenticated caller.", "session_id")
        if self.sessions is not None and owner is not None:
            conversation = await self.sessions.conversation(owner, session_id, messages, agent)
        else:
            conversation = Conversation(messages, 0, {})
        params = generation_params(entry, sampling, self.limits, conversation.agent_defaults)
        stream = self.client.generate(entry.name, conversation.messages, params)
        first = await stream.__anext__()

        async def remember(answer: str, completion_tokens: int) -> None:
            if session_id is not None:
                await self.sessions.append(owner, session_id, [*messages, {"role": "assistant", "content": answer}],
                                           [*first["message_tokens"][conversation.new_from:], completion_tokens])

        return ChatTurn(entry.name, first["prompt_tokens"], stream, remember)

    async def complete(self, owner: str | None, messages: list[dict], model: str | None = None,
                       sampling: Sampling = Sampling(), session_id: str | None = None, agent: str | None = None) -> ChatAnswer:
        turn = await self.start(owner, messages, model, sampling, session_id, agent)
        return await turn.answer()

"""Chat sessions: persisted history that a chat completion continues and appends to (REST and the chat UI)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import object_session

from services.errors import NotFound
from services.storage.db import run_in_session
from services.storage.repositories import AgentRepository, SessionActionRepository, SessionRepository


@dataclass(frozen=True)
class Conversation:
    """What the model sees: the agent's system prompt, the stored history, then the new messages."""

    messages: list[dict]
    new_from: int  # index of the first message that is not yet stored
    agent_defaults: dict  # the agent's temperature and max_tokens, when an agent applies
    agent: str | None = None  # the agent's name, when one applies
    actions: tuple[str, ...] = ()  # the actions that agent may take
    tool_choice: str = "auto"  # the agent's: "required" makes every answer a call (of an action or of `reply`)


def _agent(s, name: str | None):
    agent = AgentRepository.by_name(s, name) if name else None
    if name and agent is None:
        raise NotFound(f"No agent named {name!r}.", "agent")
    return agent


def _session(s, owner_id: str, session_id: str):
    chat = SessionRepository.get(s, owner_id, session_id)
    if chat is None:
        raise NotFound(f"No chat session {session_id!r} for this key.", "session_id")
    return chat


class SessionStore:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def conversation(self, owner_id: str, session_id: str | None, new: list[dict],
                           agent_name: str | None = None) -> Conversation:
        def load(s) -> Conversation:
            agent, history = _agent(s, agent_name), []
            if session_id is not None:
                chat = _session(s, owner_id, session_id)
                if chat.state != "idle" and new:  # an action waits for a person: decide it first (docs/agents.md)
                    from services.core.actions import waiting_conflict

                    raise waiting_conflict(chat.id, SessionActionRepository.pending(s, chat.id))
                agent = agent or chat.agent
                history = [message_dict(m) for m in chat.messages]
            system = [{"role": "system", "content": agent.system_prompt}] if agent else []
            if system and new and new[0]["role"] == "system":
                system = []  # the caller's own system message wins
            messages = system + history + new
            defaults = {"temperature": agent.temperature, "max_tokens": agent.max_tokens} if agent else {}
            if agent is None:
                return Conversation(messages, len(messages) - len(new), defaults)
            return Conversation(messages, len(messages) - len(new), defaults, agent.name, tuple(agent.actions or ()),
                                agent.tool_choice)

        return await run_in_session(self.database_url, load)

    async def append(self, owner_id: str, session_id: str, messages: list[dict], token_counts: list[int]) -> None:
        def store(s) -> None:
            chat = SessionRepository.get(s, owner_id, session_id)
            if chat is None:  # deleted while the answer was generated
                return
            for message, tokens in zip(messages, token_counts, strict=True):
                SessionRepository.append(s, chat, message["role"], message.get("content"), tokens,
                                         message.get("tool_calls"), message.get("tool_call_id"))

        await run_in_session(self.database_url, store)

    async def create(self, owner_id: str, title: str = "", agent_name: str | None = None) -> dict:
        def create(s) -> dict:
            agent = _agent(s, agent_name)
            return session_dict(SessionRepository.create(s, owner_id, title, agent.id if agent else None))

        return await run_in_session(self.database_url, create)

    async def get(self, owner_id: str, session_id: str) -> dict:
        return await run_in_session(self.database_url, lambda s: session_dict(_session(s, owner_id, session_id), True))

    async def list(self, owner_id: str) -> list[dict]:
        return await run_in_session(self.database_url, lambda s: [session_dict(c) for c in SessionRepository.list(s, owner_id)])

    async def delete(self, owner_id: str, session_id: str) -> None:
        if not await run_in_session(self.database_url, lambda s: SessionRepository.delete(s, owner_id, session_id)):
            raise NotFound(f"No chat session {session_id!r} for this key.", "session_id")


def message_dict(message) -> dict:
    """A stored message in OpenAI's shape: an assistant's calls in ``tool_calls`` (content None when it only
    called), a tool result with its ``tool_call_id``."""
    body = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["tool_calls"] = message.tool_calls
        body["content"] = message.content or None
    if message.tool_call_id:
        body["tool_call_id"] = message.tool_call_id
    return body


def session_dict(chat, with_messages: bool = False) -> dict:
    body = {"id": chat.id, "object": "chat.session", "title": chat.title,
            "agent": chat.agent.name if chat.agent else None, "state": chat.state,
            "created_at": chat.created_at.isoformat(), "updated_at": chat.updated_at.isoformat()}
    if with_messages:
        from services.core.actions import action_dict

        body["messages"] = [{**message_dict(m), "tokens": m.tokens, "created_at": m.created_at.isoformat()}
                            for m in chat.messages]
        pending = SessionActionRepository.pending(object_session(chat), chat.id) if chat.state != "idle" else None
        body["pending_action"] = action_dict(pending) if pending else None
    return body

"""Chat sessions: persisted history that a chat completion continues and appends to (REST and the chat UI)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool

from services.errors import NotFound
from services.storage.db import session_scope
from services.storage.repositories import AgentRepository, SessionRepository


@dataclass(frozen=True)
class Conversation:
    """What the model sees: the agent's system prompt, the stored history, then the new messages."""

    session_id: str | None
    messages: list[dict]
    new_from: int  # index of the first message that is not yet stored
    agent_defaults: dict  # the agent's temperature and max_tokens, when an agent applies


class SessionStore:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def conversation(self, owner_id: str, session_id: str | None, new: list[dict],
                           agent_name: str | None = None) -> Conversation:
        def load() -> Conversation:
            with session_scope(self.database_url) as s:
                history: list[dict] = []
                agent = AgentRepository.by_name(s, agent_name) if agent_name else None
                if agent_name and agent is None:
                    raise NotFound(f"No agent named {agent_name!r}.", "agent")
                if session_id is not None:
                    chat = SessionRepository.get(s, owner_id, session_id)
                    if chat is None:
                        raise NotFound(f"No chat session {session_id!r} for this key.", "session_id")
                    if chat.agent_id and agent is None:
                        agent = chat.agent
                    history = [{"role": m.role, "content": m.content} for m in chat.messages]
                system = [{"role": "system", "content": agent.system_prompt}] if agent else []
                if system and new and new[0]["role"] == "system":
                    system = []  # the caller's own system message wins
                messages = system + history + new
                defaults = {"temperature": agent.temperature, "max_tokens": agent.max_tokens} if agent else {}
                return Conversation(session_id, messages, len(messages) - len(new), defaults)

        return await run_in_threadpool(load)

    async def append(self, owner_id: str, session_id: str, messages: list[dict], token_counts: list[int]) -> None:
        def store() -> None:
            with session_scope(self.database_url) as s:
                chat = SessionRepository.get(s, owner_id, session_id)
                if chat is None:  # deleted while the answer was generated
                    return
                for message, tokens in zip(messages, token_counts, strict=True):
                    SessionRepository.append(s, chat, message["role"], message["content"], tokens)

        await run_in_threadpool(store)

    async def create(self, owner_id: str, title: str = "", agent_name: str | None = None) -> dict:
        def create() -> dict:
            with session_scope(self.database_url) as s:
                agent = AgentRepository.by_name(s, agent_name) if agent_name else None
                if agent_name and agent is None:
                    raise NotFound(f"No agent named {agent_name!r}.", "agent")
                return session_dict(SessionRepository.create(s, owner_id, title, agent.id if agent else None))

        return await run_in_threadpool(create)

    async def get(self, owner_id: str, session_id: str) -> dict:
        def read() -> dict:
            with session_scope(self.database_url) as s:
                chat = SessionRepository.get(s, owner_id, session_id)
                if chat is None:
                    raise NotFound(f"No chat session {session_id!r} for this key.", "session_id")
                return session_dict(chat, with_messages=True)

        return await run_in_threadpool(read)

    async def list(self, owner_id: str) -> list[dict]:
        def read() -> list[dict]:
            with session_scope(self.database_url) as s:
                return [session_dict(c) for c in SessionRepository.list(s, owner_id)]

        return await run_in_threadpool(read)

    async def delete(self, owner_id: str, session_id: str) -> None:
        def delete() -> bool:
            with session_scope(self.database_url) as s:
                return SessionRepository.delete(s, owner_id, session_id)

        if not await run_in_threadpool(delete):
            raise NotFound(f"No chat session {session_id!r} for this key.", "session_id")


def session_dict(chat, with_messages: bool = False) -> dict:
    body = {"id": chat.id, "object": "chat.session", "title": chat.title,
            "agent": chat.agent.name if chat.agent_id and chat.agent else None,
            "created_at": chat.created_at.isoformat(), "updated_at": chat.updated_at.isoformat()}
    if with_messages:
        body["messages"] = [{"role": m.role, "content": m.content, "tokens": m.tokens, "created_at": m.created_at.isoformat()}
                            for m in chat.messages]
    return body

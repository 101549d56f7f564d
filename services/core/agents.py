"""Agents: a name, a system prompt, generation settings and the actions it may take. Created through REST, MCP-less
faces and the ``create_agent`` action alike, with the same checks."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from services.config import LimitsArgs
from services.errors import Conflict, InputTooLarge, InvalidInput, NotFound
from services.storage.db import run_in_session
from services.storage.repositories import AgentRepository

TOOL_CHOICES = ("auto", "required")


class AgentService:
    def __init__(self, database_url: str, limits: LimitsArgs, known_actions: Callable[[], list[str]]) -> None:
        self.database_url, self.limits, self.known_actions = database_url, limits, known_actions

    def check_actions(self, actions: list[str]) -> None:
        known = self.known_actions()
        unknown = [name for name in actions if name not in known]
        if unknown:
            raise InvalidInput(f"Got unknown action(s) {', '.join(map(repr, unknown))}. Actions: {', '.join(known)}.", "actions")
        if len(set(actions)) != len(actions):
            raise InvalidInput(f"Got actions {actions}: each may be named once.", "actions")

    async def create(self, owner_id: str, name: str, system_prompt: str, temperature: float = 0.7, max_tokens: int = 256,
                     actions: list[str] | None = None, tool_choice: str = "auto") -> dict:
        if max_tokens > self.limits.max_completion_tokens:
            raise InputTooLarge(f"Got max_tokens={max_tokens}. At most {self.limits.max_completion_tokens}.", "max_tokens")
        if tool_choice not in TOOL_CHOICES:
            raise InvalidInput(f"Got tool_choice {tool_choice!r}. It is one of {', '.join(TOOL_CHOICES)}.", "tool_choice")
        actions = list(actions or [])
        self.check_actions(actions)
        if tool_choice == "required" and not actions:
            raise InvalidInput("tool_choice 'required' needs at least one action.", "tool_choice")
        try:
            return await run_in_session(self.database_url, lambda s: agent_dict(AgentRepository.create(
                s, owner_id, name, system_prompt, temperature, max_tokens, actions, tool_choice)))
        except IntegrityError:
            raise Conflict(f"An agent named {name!r} already exists.", "name") from None

    async def list(self) -> list[dict]:
        return await run_in_session(self.database_url, lambda s: [agent_dict(a) for a in AgentRepository.list(s)])

    async def get(self, name: str) -> dict:
        def read(s) -> dict:
            agent = AgentRepository.by_name(s, name)
            if agent is None:
                raise NotFound(f"No agent named {name!r}.", "name")
            return agent_dict(agent)

        return await run_in_session(self.database_url, read)


def agent_dict(agent) -> dict:
    return {"name": agent.name, "system_prompt": agent.system_prompt, "temperature": agent.temperature,
            "max_tokens": agent.max_tokens, "actions": list(agent.actions or []), "tool_choice": agent.tool_choice,
            "created_at": agent.created_at.isoformat(), "ui_url": f"/ui/chat/?agent={agent.name}"}

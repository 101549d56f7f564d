"""Agents created at runtime: a name, a system prompt and generation settings, usable at once.

No Gradio app is mounted per agent (mounting into a running server breaks Gradio's queue): the one chat UI
reads the agent from its URL (``/ui/chat/?agent=NAME``), and REST chat takes ``"agent": NAME``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError

from services.errors import Conflict, InputTooLarge, NotFound
from services.ingress.dependencies import LimitsDep
from services.ingress.schemas import ERROR_RESPONSES, AgentCreate, AgentInfo, ErrorResponse
from services.storage.db import session_scope
from services.storage.repositories import AgentRepository

router = APIRouter(prefix="/v1/agents", tags=["agents"],
                   responses={**{k: ERROR_RESPONSES[k] for k in (400, 404)}, 409: {"model": ErrorResponse, "description": "The name is taken."}})


def _info(agent) -> AgentInfo:
    return AgentInfo(name=agent.name, system_prompt=agent.system_prompt, temperature=agent.temperature,
                     max_tokens=agent.max_tokens, created_at=agent.created_at.isoformat(), ui_url=f"/ui/chat/?agent={agent.name}")


@router.post("", response_model=AgentInfo, status_code=201)
async def create_agent(body: AgentCreate, request: Request, limits: LimitsDep) -> AgentInfo:
    """Create an agent; the answer carries the URL of its chat UI, which works immediately."""
    if body.max_tokens > limits.max_completion_tokens:
        raise InputTooLarge(f"Got max_tokens={body.max_tokens}. At most {limits.max_completion_tokens}.", "max_tokens")

    def create() -> AgentInfo:
        with session_scope(request.app.state.settings.database_url) as session:
            return _info(AgentRepository.create(session, request.state.principal.key_id, body.name, body.system_prompt,
                                                body.temperature, body.max_tokens))

    try:
        return await run_in_threadpool(create)
    except IntegrityError:
        raise Conflict(f"An agent named {body.name!r} already exists.", "name") from None


@router.get("", response_model=list[AgentInfo])
async def list_agents(request: Request) -> list[AgentInfo]:
    """Every agent, oldest first."""
    def read() -> list[AgentInfo]:
        with session_scope(request.app.state.settings.database_url) as session:
            return [_info(agent) for agent in AgentRepository.list(session)]

    return await run_in_threadpool(read)


@router.get("/{name}", response_model=AgentInfo)
async def get_agent(name: str, request: Request) -> AgentInfo:
    """One agent."""
    def read() -> AgentInfo:
        with session_scope(request.app.state.settings.database_url) as session:
            agent = AgentRepository.by_name(session, name)
            if agent is None:
                raise NotFound(f"No agent named {name!r}.", "name")
            return _info(agent)

    return await run_in_threadpool(read)

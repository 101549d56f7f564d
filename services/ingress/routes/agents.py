"""Agents created at runtime: a name, a system prompt and generation settings, usable at once.

No Gradio app is mounted per agent (mounting into a running server breaks Gradio's queue): the one chat UI
reads the agent from its URL (``/ui/chat/?agent=NAME``), and REST chat takes ``"agent": NAME``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from services.errors import Conflict, InputTooLarge, NotFound
from services.ingress.dependencies import LimitsDep
from services.ingress.schemas import ERROR_RESPONSES, AgentCreate, AgentInfo, ErrorResponse
from services.storage.db import run_in_session
from services.storage.repositories import AgentRepository

router = APIRouter(prefix="/v1/agents", tags=["agents"],
                   responses={**{k: ERROR_RESPONSES[k] for k in (400, 404)}, 409: {"model": ErrorResponse, "description": "The name is taken."}})


def _url(request: Request) -> str:
    return request.app.state.settings.database_url


def _info(agent) -> AgentInfo:
    return AgentInfo(name=agent.name, system_prompt=agent.system_prompt, temperature=agent.temperature,
                     max_tokens=agent.max_tokens, created_at=agent.created_at.isoformat(), ui_url=f"/ui/chat/?agent={agent.name}")


@router.post("", response_model=AgentInfo, status_code=201)
async def create_agent(body: AgentCreate, request: Request, limits: LimitsDep) -> AgentInfo:
    """Create an agent; the answer carries the URL of its chat UI, which works immediately."""
    if body.max_tokens > limits.max_completion_tokens:
        raise InputTooLarge(f"Got max_tokens={body.max_tokens}. At most {limits.max_completion_tokens}.", "max_tokens")

    owner = request.state.principal.key_id
    try:
        return await run_in_session(_url(request), lambda s: _info(AgentRepository.create(
            s, owner, body.name, body.system_prompt, body.temperature, body.max_tokens)))
    except IntegrityError:
        raise Conflict(f"An agent named {body.name!r} already exists.", "name") from None


@router.get("", response_model=list[AgentInfo])
async def list_agents(request: Request) -> list[AgentInfo]:
    """Every agent, oldest first."""
    return await run_in_session(_url(request), lambda s: [_info(agent) for agent in AgentRepository.list(s)])


@router.get("/{name}", response_model=AgentInfo)
async def get_agent(name: str, request: Request) -> AgentInfo:
    """One agent."""
    def read(s) -> AgentInfo:
        agent = AgentRepository.by_name(s, name)
        if agent is None:
            raise NotFound(f"No agent named {name!r}.", "name")
        return _info(agent)

    return await run_in_session(_url(request), read)

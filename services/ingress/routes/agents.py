"""Agents created at runtime: a name, a system prompt, generation settings and the actions it may take, usable at once.

No Gradio app is mounted per agent (mounting into a running server breaks Gradio's queue): the one chat UI
reads the agent from its URL (``/ui/chat/?agent=NAME``), and REST chat takes ``"agent": NAME``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from services.core.actions import ActionService
from services.core.agents import AgentService
from services.ingress.dependencies import CallerDep, _part
from services.ingress.schemas import ERROR_RESPONSES, ActionInfo, AgentCreate, AgentInfo, ErrorResponse

AgentsDep = Annotated[AgentService, _part("agents")]
ActionsDep = Annotated[ActionService, _part("actions")]

agents_router = APIRouter(prefix="/v1/agents", tags=["agents"],
                   responses={**{k: ERROR_RESPONSES[k] for k in (400, 404)}, 409: {"model": ErrorResponse, "description": "The name is taken."}})


@agents_router.post("", response_model=AgentInfo, status_code=201)
async def create_agent(body: AgentCreate, caller: CallerDep, agents: AgentsDep) -> dict:
    """Create an agent; the answer carries the URL of its chat UI, which works immediately. Naming an action that
    does not exist (see GET /v1/actions) is a 400."""
    return await agents.create(caller.key_id, body.name, body.system_prompt, body.temperature, body.max_tokens,
                               body.actions, body.tool_choice)


@agents_router.get("", response_model=list[AgentInfo])
async def list_agents(agents: AgentsDep) -> list[dict]:
    """Every agent, oldest first."""
    return await agents.list()


@agents_router.get("/{name}", response_model=AgentInfo)
async def get_agent(name: str, agents: AgentsDep) -> dict:
    """One agent."""
    return await agents.get(name)


actions_router = APIRouter(prefix="/v1/actions", tags=["agents"])


@actions_router.get("", response_model=list[ActionInfo])
async def list_actions(actions: ActionsDep) -> list[dict]:
    """The actions agents may declare: the built-ins and the deployer's, each with its arguments' JSON schema and
    whether a person must confirm it."""
    return [action.describe() for action in actions.registry.actions.values()]


router = APIRouter()  # what the app includes: both, once their routes exist
router.include_router(agents_router)
router.include_router(actions_router)

"""Chat sessions: create, list, read and delete; a key sees only its own. An action an agent proposed waits in its
session until the owner accepts or rejects it (docs/agents.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from services.core.actions import ActionService
from services.ingress.dependencies import CallerDep, SessionsDep, _part
from services.ingress.schemas import (
    ERROR_RESPONSES,
    ActionAccept,
    ActionReject,
    ErrorResponse,
    PendingActions,
    SessionAction,
    SessionCreate,
    SessionDetail,
    SessionInfo,
)

ActionsDep = Annotated[ActionService, _part("actions")]
sessions_router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses={k: ERROR_RESPONSES[k] for k in (400, 404)})
DECIDED = {409: {"model": ErrorResponse, "description": "No action waits: it was already accepted or rejected (the "
                                                        "message names that decision), or none was proposed."}}


@sessions_router.post("", response_model=SessionInfo, status_code=201)
async def create_session(body: SessionCreate, caller: CallerDep, sessions: SessionsDep) -> dict:
    """Start a chat session; pass its id as `session_id` in chat completions to continue it."""
    return await sessions.create(caller.key_id, body.title, body.agent)


@sessions_router.get("", response_model=list[SessionInfo])
async def list_sessions(caller: CallerDep, sessions: SessionsDep) -> list[dict]:
    """This key's sessions, most recently used first."""
    return await sessions.list(caller.key_id)


@sessions_router.get("/{session_id}", response_model=SessionDetail)
async def get_session(session_id: str, caller: CallerDep, sessions: SessionsDep) -> dict:
    """A session with its messages, its state and the action waiting for a decision (if any)."""
    return await sessions.get(caller.key_id, session_id)


@sessions_router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: str, caller: CallerDep, sessions: SessionsDep) -> Response:
    """Delete a session and its messages."""
    await sessions.delete(caller.key_id, session_id)
    return Response(status_code=204)


@sessions_router.get("/{session_id}/actions", response_model=list[SessionAction])
async def list_session_actions(session_id: str, caller: CallerDep, actions: ActionsDep) -> list[dict]:
    """Every action proposed in the session and what became of it, oldest first."""
    return await actions.history(caller.key_id, session_id)


@sessions_router.post("/{session_id}/actions/accept", response_model=SessionAction, responses=DECIDED)
async def accept_action(session_id: str, caller: CallerDep, actions: ActionsDep,
                        body: Annotated[ActionAccept | None, Body(examples=[{}, {"action_id": "3f2a9c0d1e4b5a6f"}])] = None) -> dict:
    """Run the waiting action, exactly once; its result goes to the history as a `tool` message and the session
    is idle again. A second decision is a 409 naming the first."""
    return await actions.accept(caller.key_id, session_id, body.action_id if body else None)


@sessions_router.post("/{session_id}/actions/reject", response_model=SessionAction, responses=DECIDED)
async def reject_action(session_id: str, body: ActionReject, caller: CallerDep, actions: ActionsDep) -> dict:
    """Discard the waiting action; the reason goes to the history for the model's next turn. A second decision is a
    409 naming the first."""
    return await actions.reject(caller.key_id, session_id, body.reason, body.action_id)


pending_router = APIRouter(prefix="/v1/actions", tags=["sessions"], responses={k: ERROR_RESPONSES[k] for k in (400,)})


@pending_router.get("/pending", response_model=PendingActions)
async def list_pending_actions(caller: CallerDep, actions: ActionsDep) -> PendingActions:
    """This key's actions waiting for a decision, in all its sessions, oldest first."""
    return PendingActions(actions=await actions.pending(caller.key_id))


router = APIRouter()  # what the app includes: both, once their routes exist
router.include_router(sessions_router)
router.include_router(pending_router)

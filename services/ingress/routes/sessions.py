"""Chat sessions: create, list, read and delete; a key sees only its own."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.ingress.dependencies import CallerDep, SessionsDep
from services.ingress.schemas import ERROR_RESPONSES, SessionCreate, SessionDetail, SessionInfo

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses={k: ERROR_RESPONSES[k] for k in (400, 404)})


@router.post("", response_model=SessionInfo, status_code=201)
async def create_session(body: SessionCreate, caller: CallerDep, sessions: SessionsDep) -> dict:
    """Start a chat session; pass its id as `session_id` in chat completions to continue it."""
    return await sessions.create(caller.key_id, body.title, body.agent)


@router.get("", response_model=list[SessionInfo])
async def list_sessions(caller: CallerDep, sessions: SessionsDep) -> list[dict]:
    """This key's sessions, most recently used first."""
    return await sessions.list(caller.key_id)


@router.get("/{session_id}", response_model=SessionDetail)
async def get_session(session_id: str, caller: CallerDep, sessions: SessionsDep) -> dict:
    """A session with its messages (role, content, token count, time)."""
    return await sessions.get(caller.key_id, session_id)


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: str, caller: CallerDep, sessions: SessionsDep) -> Response:
    """Delete a session and its messages."""
    await sessions.delete(caller.key_id, session_id)
    return Response(status_code=204)

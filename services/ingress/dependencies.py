"""FastAPI dependencies: the core's services and the caller. Routes take these, never ``app.state`` directly."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.config import LimitsArgs
from services.core.catalogue import Catalogue
from services.core.chat import ChatService
from services.core.client import ModelClient
from services.core.jobs import JobService
from services.core.models import ModelService
from services.core.services import Core
from services.core.sessions import SessionStore
from services.errors import Forbidden, RaydioError
from services.ingress.auth import Principal


def get_core(request: Request) -> Core:
    return request.app.state.core


def get_caller(request: Request) -> Principal:
    """Who is calling: set once by the auth middleware for every route (REST, MCP, Gradio)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:  # only reachable if a route is mounted outside the middleware
        raise RaydioError("No authenticated caller.")
    return principal


def require_scope(scope: str):
    """A route dependency: the caller must hold ``scope`` (the middleware has already checked who the caller is)."""
    def check(caller: Annotated[Principal, Depends(get_caller)]) -> Principal:
        if scope not in caller.scopes:
            raise Forbidden(f"This key lacks the '{scope}' scope this needs.")
        return caller

    return Depends(check)


def _part(name: str):
    def dependency(request: Request):
        return getattr(request.app.state.core, name)

    return Depends(dependency)


CoreDep = Annotated[Core, Depends(get_core)]
CallerDep = Annotated[Principal, Depends(get_caller)]
AdminDep = Annotated[Principal, require_scope("admin")]
ClientDep = Annotated[ModelClient, _part("client")]
CatalogueDep = Annotated[Catalogue, _part("catalogue")]
ModelsDep = Annotated[ModelService, _part("models")]
ChatDep = Annotated[ChatService, _part("chat")]
JobsDep = Annotated[JobService, _part("jobs")]
SessionsDep = Annotated[SessionStore, _part("sessions")]
LimitsDep = Annotated[LimitsArgs, _part("limits")]

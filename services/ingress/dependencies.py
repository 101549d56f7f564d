"""FastAPI dependencies. Tests override ``get_backends`` to run the routes without a Ray cluster."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.config import LimitsArgs
from services.ingress.backends import ModelBackends
from services.ingress.jobs import JobStore
from services.ingress.sessions import SessionStore


def get_backends(request: Request) -> ModelBackends:
    return request.app.state.backends


def get_limits(request: Request) -> LimitsArgs:
    return request.app.state.limits


def get_sessions(request: Request) -> SessionStore:
    return request.app.state.sessions


def get_jobs(request: Request) -> JobStore:
    return request.app.state.jobs


BackendsDep = Annotated[ModelBackends, Depends(get_backends)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
SessionsDep = Annotated[SessionStore, Depends(get_sessions)]
LimitsDep = Annotated[LimitsArgs, Depends(get_limits)]

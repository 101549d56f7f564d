"""One object holding the core's services, built once per process (ingress replica, job runner, test)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.config import ActionArgs, JobsArgs, LimitsArgs, ModelEntry
from services.core.actions import ActionService, build_actions
from services.core.agents import AgentService
from services.core.catalogue import Catalogue
from services.core.chat import ChatService
from services.core.client import ModelClient
from services.core.jobs import JobService, JobStore
from services.core.models import ModelService
from services.core.sessions import SessionStore


@dataclass(frozen=True)
class Core:
    catalogue: Catalogue
    client: ModelClient
    models: ModelService
    chat: ChatService
    sessions: SessionStore
    jobs: JobService
    limits: LimitsArgs
    agents: AgentService
    actions: ActionService


def build_core(models: list[ModelEntry] | Catalogue, handles: dict[str, Any], database_url: str,
               limits: LimitsArgs | None = None, jobs_args: JobsArgs | None = None, timeout_s: float | None = None,
               services: dict[str, Any] | None = None, remotes: dict[str, Any] | None = None,
               actions: Sequence[ActionArgs] = ()) -> Core:
    limits = limits or LimitsArgs()
    catalogue = models if isinstance(models, Catalogue) else Catalogue(models)
    client = ModelClient(catalogue, handles, timeout_s=timeout_s or limits.request_timeout_s, services=services, remotes=remotes)
    sessions = SessionStore(database_url)
    jobs = JobService(JobStore(database_url), catalogue, limits, jobs_args or JobsArgs())
    action_service, agents = build_actions(actions, database_url, jobs, client,
                                           lambda known: AgentService(database_url, limits, known))
    return Core(catalogue, client, ModelService(client), ChatService(client, limits, sessions, action_service), sessions,
                jobs, limits, agents, action_service)

"""What every Gradio UI gets: the model backends and the stores, and who is calling."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from services.ingress.backends import ModelBackends
from services.ingress.jobs import JobStore
from services.ingress.sessions import SessionStore


@dataclass(frozen=True)
class UIContext:
    backends: ModelBackends
    sessions: SessionStore
    jobs: JobStore


def owner(request: gr.Request) -> str:
    """The API key id behind this Gradio call (set by the auth middleware on the underlying request)."""
    principal = getattr(request.request.state, "principal", None) if request.request else None
    if principal is None:
        raise gr.Error("Not logged in.")
    return principal.key_id

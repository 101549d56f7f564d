"""What every Gradio UI gets: the core, and who is calling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from services.core.services import Core


@dataclass(frozen=True)
class UIPage:
    name: str  # mounted at /ui/<name>/
    description: str
    build: Callable[[], gr.Blocks]


def owner(request: gr.Request) -> str:
    """The API key id behind this Gradio call (set by the auth middleware on the underlying request)."""
    principal = getattr(request.request.state, "principal", None) if request.request else None
    if principal is None:
        raise gr.Error("Not logged in.")
    return principal.key_id


def model_choice(core: Core, kind: str, label: str = "Model") -> gr.Dropdown:
    """A model picker over the catalogue's models of a kind; hidden when there is only one."""
    names = [m.name for m in core.catalogue.of_kind(kind)]
    return gr.Dropdown(names, value=names[0], label=label, visible=len(names) > 1)


def queue_size(core: Core, kind: str, per_slot: int = 4) -> tuple[int, int]:
    """(events run at once, events waiting) for a UI over a kind's models: as many at once as the deployments take
    (max_ongoing_requests x max_replicas, summed), and a bounded wait behind them; a full queue is refused at once."""
    running = sum(m.deployment.max_ongoing_requests * m.deployment.autoscaling.max_replicas for m in core.catalogue.of_kind(kind))
    return max(running, 1), max(running, 1) * per_slot

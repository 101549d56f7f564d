"""Gradio UIs. Each builder takes a ``UIContext`` and returns a ``gr.Blocks`` that calls the same backends and
stores as the REST routes."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from services.ingress.ui.chat import build_chat_ui
from services.ingress.ui.context import UIContext
from services.ingress.ui.digits import build_digits_ui
from services.ingress.ui.embeddings import build_embeddings_ui
from services.ingress.ui.jobs import build_jobs_ui

UI_BUILDERS: dict[str, tuple[str, Callable[[UIContext], gr.Blocks]]] = {
    "chat": ("Streaming chatbot that keeps your session (add ?agent=NAME for an agent)", build_chat_ui),
    "digits": ("Draw a digit, see the label and probabilities", build_digits_ui),
    "embeddings": ("Rank sentences by similarity to a query", build_embeddings_ui),
    "jobs": ("Submit batch jobs and watch their progress", build_jobs_ui),
}

"""Gradio UIs. Each builder returns a ``gr.Blocks`` that calls the same ``ModelBackends`` as the REST routes."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from services.ingress.backends import ModelBackends
from services.ingress.sessions import SessionStore
from services.ingress.ui.chat import build_chat_ui
from services.ingress.ui.digits import build_digits_ui
from services.ingress.ui.embeddings import build_embeddings_ui

UI_BUILDERS: dict[str, tuple[str, Callable[[ModelBackends, SessionStore], gr.Blocks]]] = {
    "chat": ("Streaming chatbot", build_chat_ui),
    "digits": ("Draw a digit, see the label and probabilities", build_digits_ui),
    "embeddings": ("Rank sentences by similarity to a query", build_embeddings_ui),
}

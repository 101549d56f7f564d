"""Gradio UIs, generated from the catalogue. Each page calls the core's services, as the REST routes do.

- ``/ui/chat/`` and ``/ui/embeddings/``: one page per kind, with a model picker when the catalogue has several;
- ``/ui/<name>/`` for every ``torchscript`` entry: a form generated from its signature (a sketchpad when it takes
  images);
- ``/ui/jobs/``: durable batch jobs.
"""

from __future__ import annotations

import logging

from services.core.services import Core
from services.ingress.ui.chat import build_chat_ui
from services.ingress.ui.context import UIPage
from services.ingress.ui.embeddings import build_embeddings_ui
from services.ingress.ui.jobs import build_jobs_ui
from services.ingress.ui.tensor import build_tensor_ui

logger = logging.getLogger(__name__)


def ui_pages(core: Core) -> list[UIPage]:
    pages = []
    if core.catalogue.of_kind("text-generation"):
        pages.append(UIPage("chat", "Streaming chatbot that keeps your session (add ?agent=NAME for an agent)",
                            lambda: build_chat_ui(core)))
    for entry in core.catalogue.of_kind("torchscript"):
        what = "Draw or upload an image" if entry.image else "Enter inputs"
        pages.append(UIPage(entry.name, f"{entry.name}: {what}, see the {'label' if entry.labels else 'outputs'}",
                            lambda entry=entry: build_tensor_ui(core, entry)))
    if core.catalogue.of_kind("sentence-embedding"):
        pages.append(UIPage("embeddings", "Rank sentences by similarity to a query", lambda: build_embeddings_ui(core)))
    pages.append(UIPage("jobs", "Submit batch jobs and watch their progress", lambda: build_jobs_ui(core)))
    seen, unique = set(), []
    for page in pages:
        if page.name in seen:
            logger.warning("a model named %r hides the %s UI; rename it to see both", page.name, page.name)
            continue
        seen.add(page.name)
        unique.append(page)
    return unique

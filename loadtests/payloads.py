"""What the Gradio scenarios send to each page's API, one place (plain data: no locust import, which
monkey-patches the process, so unit tests can check these against the pages' signatures)."""

from __future__ import annotations

EMBEDDER, CHAT = "embedder", "chat"  # the models of configs/serve/local.yaml the scenarios use


def ui_rank(query: str, sentences: list[str]) -> list:
    """``/ui/embeddings`` ``rank``: query, the sentences one per line, the model."""
    return [query, "\n".join(sentences), EMBEDDER]


def ui_chat(message: str, max_tokens: int = 32, temperature: float = 0.7) -> list:
    """``/ui/chat`` ``chat``: message, max tokens, temperature, the saved conversation (none), the model."""
    return [message, max_tokens, temperature, {}, CHAT]

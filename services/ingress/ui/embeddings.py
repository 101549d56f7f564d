from __future__ import annotations

import gradio as gr

from services.core.services import Core
from services.errors import RaydioError
from services.ingress.ui.context import model_choice, queue_size

EXAMPLE_SENTENCES = "\n".join([
    "A man is playing a guitar on stage.",
    "The stock market fell sharply today.",
    "Someone performs music with a string instrument.",
    "Cats like to sleep in the sun.",
])


def build_embeddings_ui(core: Core) -> gr.Blocks:
    async def rank(query: str, sentences: str, model: str) -> list[list]:
        """Rank sentences (one per line) by cosine similarity to the query, most similar first."""
        candidates = [line.strip() for line in sentences.splitlines() if line.strip()]
        if not query.strip() or not candidates:
            raise gr.Error("Enter a query and at least one sentence.")
        try:
            ranking = await core.models.rank(model, query.strip(), candidates)
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        return [[r.score, r.text] for r in ranking]

    running, waiting = queue_size(core, "sentence-embedding")
    with gr.Blocks(title="raydio · embeddings") as demo:
        gr.Markdown("## Embeddings\nRank sentences by meaning, not by shared words.")
        model = model_choice(core, "sentence-embedding")
        query = gr.Textbox(label="Query", value="Someone is making music.")
        sentences = gr.Textbox(label="Sentences, one per line", lines=6, value=EXAMPLE_SENTENCES)
        table = gr.Dataframe(headers=["similarity", "sentence"], label="Ranked", interactive=False)
        gr.Button("Rank", variant="primary").click(
            rank, [query, sentences, model], table, api_name="rank", concurrency_limit=running,
            api_description="Rank newline-separated sentences by cosine similarity to the query.",
        )
    return demo.queue(max_size=waiting)

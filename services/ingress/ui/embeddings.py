from __future__ import annotations

import gradio as gr

from services.errors import RaydioError
from services.ingress.backends import ModelBackends

EXAMPLE_SENTENCES = "\n".join([
    "A man is playing a guitar on stage.",
    "The stock market fell sharply today.",
    "Someone performs music with a string instrument.",
    "Cats like to sleep in the sun.",
])


def build_embeddings_ui(backends: ModelBackends, _sessions=None) -> gr.Blocks:
    async def rank(query: str, sentences: str) -> list[list]:
        """Rank sentences (one per line) by cosine similarity to the query, most similar first."""
        candidates = [line.strip() for line in sentences.splitlines() if line.strip()]
        if not query.strip() or not candidates:
            raise gr.Error("Enter a query and at least one sentence.")
        try:
            result = await backends.embed([query.strip(), *candidates])
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        query_vector, *vectors = result["vectors"]
        scores = [sum(q * v for q, v in zip(query_vector, vector, strict=True)) for vector in vectors]
        return sorted(([round(s, 4), c] for s, c in zip(scores, candidates, strict=True)), key=lambda row: -row[0])

    with gr.Blocks(title="raydio · embeddings") as demo:
        gr.Markdown("## Embeddings\nRank sentences by meaning, not by shared words (all-MiniLM-L6-v2).")
        query = gr.Textbox(label="Query", value="Someone is making music.")
        sentences = gr.Textbox(label="Sentences, one per line", lines=6, value=EXAMPLE_SENTENCES)
        table = gr.Dataframe(headers=["similarity", "sentence"], label="Ranked", interactive=False)
        gr.Button("Rank", variant="primary").click(
            rank, [query, sentences], table, api_name="rank",
            api_description="Rank newline-separated sentences by cosine similarity to the query.",
        )
    return demo

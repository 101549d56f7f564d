"""The peers raydio is compared with, each a plain uvicorn server in its own process:

- ``naive``: FastAPI calling the model once per request (a sync route, so FastAPI's thread pool runs it);
- ``gradio``: ``gradio.Server`` with ``@app.api(batch=True, max_batch_size=..., concurrency_limit=...)``;
- ``noop``: FastAPI serving raydio's own ``/health/live`` handler, nothing else.

    python -m bench.peers naive --port 8411
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

READY_PATH = "/ready"


class EmbeddingBody(BaseModel):
    model: str = "embedder"
    input: str | list[str]


def naive_app(model) -> FastAPI:
    app = FastAPI()

    @app.get(READY_PATH)
    def ready() -> dict:
        return {"ready": True}

    @app.post("/v1/embeddings")
    def embed(body: EmbeddingBody) -> dict:
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors = model.embed(texts).tolist()
        return {"object": "list", "data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}

    return app


def gradio_server(model, max_batch_size: int = 32, concurrency_limit: int = 1):
    import gradio as gr

    server = gr.Server()

    @server.get(READY_PATH)
    def ready() -> dict:
        return {"ready": True}

    @server.api(name="embed", batch=True, max_batch_size=max_batch_size, concurrency_limit=concurrency_limit)
    def embed(texts: list[str]) -> tuple[list[list[float]]]:
        return (model.embed(texts).tolist(),)

    return server


def noop_app() -> FastAPI:
    from services.ingress.routes.health import live

    app = FastAPI()
    app.get("/health/live")(live)
    app.get(READY_PATH)(live)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["naive", "gradio", "noop"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--concurrency-limit", type=int, default=1)
    args = parser.parse_args()
    if args.kind == "noop":
        uvicorn.run(noop_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    from services.config import default_catalogue
    from services.models.embedder import EmbedderModel
    from services.models.sources import resolve

    model = EmbedderModel(resolve(default_catalogue()[0].source, None), os.environ.get("RAYDIO_DEVICE", "auto")).load()
    if args.kind == "naive":
        uvicorn.run(naive_app(model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    else:
        gradio_server(model, args.max_batch_size, args.concurrency_limit).launch(
            server_name="127.0.0.1", server_port=args.port, quiet=True, _frontend=False)


if __name__ == "__main__":
    main()

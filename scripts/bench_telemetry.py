"""What raydio's telemetry costs per request, tracing off and on, without Ray in the way.

    make bench-telemetry        # or: python scripts/bench_telemetry.py --requests 3000

The real ingress app (middleware, routes, ModelClient) calls an instant stand-in model through a handle
that runs in-process, so the time left is the web stack plus telemetry: request id, trace context, the
HTTP metrics and access log, the handle span and carrier, the replica's server, batch and forward spans.
Each mode runs in its own process (a tracer provider can be installed once per process):

- ``off``: no ``OTEL_*`` endpoint, the default; no tracer provider, nothing recorded or exported;
- ``on``: every request sampled, spans batched to an exporter that drops them (the export thread's
  cost is off the request path either way).

It also times the pieces that run per request with tracing off, one by one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
import timeit

from opentelemetry import context as otel_context

from services.telemetry import tracing


class InstantEmbedder:
    """Shaped like EmbedderDeployment minus the model: entrypoint, batch spans and a forward span."""

    MODEL = "embedder"

    @tracing.entrypoint
    async def embed(self, texts):
        with tracing.batch_spans(self.MODEL, [otel_context.get_current()], len(texts)) as links, \
                tracing.span("embedder.forward", links, **{"raydio.batch.inputs": len(texts)}):
            return {"vectors": [[0.0] * 4 for _ in texts], "tokens": [1] * len(texts)}

    @tracing.entrypoint
    async def info(self):
        return {"model_id": "instant"}


class _Handle:
    def __init__(self, target) -> None:
        self.target = target

    def __getattr__(self, name):
        method = getattr(self.target, name)

        class _Method:
            @staticmethod
            def remote(*args, **kwargs):
                return method(*args, **kwargs)

        return _Method


def run_mode(mode: str, requests: int) -> dict:
    import httpx

    from services.config import IngressArgs, SentenceEmbeddingModelArgs, get_settings
    from services.core.services import build_core
    from services.ingress.app import build_ingress_app

    if mode == "on":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Discard(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        trace.set_tracer_provider(provider)
        tracing._enabled = True  # what setup_tracing() does after installing its OTLP exporter

    logging.getLogger("services").setLevel(logging.WARNING)  # the access log would time the terminal
    catalogue = [SentenceEmbeddingModelArgs(name="embedder", kind="sentence-embedding", source="instant")]
    core = build_core(catalogue, {"embedder": _Handle(InstantEmbedder())}, get_settings().database_url)
    app = build_ingress_app(core, IngressArgs(mount_ui=False))

    async def drive() -> list[float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(200):  # warm up
                await client.post("/v1/embeddings", json={"input": ["warm"]})
            latencies = []
            for _ in range(requests):
                start = time.perf_counter()
                response = await client.post("/v1/embeddings", json={"input": ["hello"]})
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200
            return latencies

    latencies = asyncio.run(drive())
    result = {"mode": mode, "p50_us": statistics.median(latencies) * 1e6, "mean_us": statistics.fmean(latencies) * 1e6}
    if mode == "off":
        headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        n = 20000
        pieces = {
            "root_context (new trace id)": lambda: tracing.root_context({}),
            "root_context (incoming traceparent)": lambda: tracing.root_context(headers),
            "inject carrier": tracing.inject,
            "extract carrier": lambda: tracing.extract(headers),
            "no-op span start/end": lambda: tracing.tracer().start_span("x").end(),
        }
        result["pieces_us"] = {name: timeit.timeit(fn, number=n) / n * 1e6 for name, fn in pieces.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--mode", choices=["off", "on"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.requests)))
        return 0
    results = {}
    for mode in ("off", "on", "off", "on"):  # interleaved, second round reported: warmer caches, fairer
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--requests", str(args.requests)],
                             capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    print(f"{args.requests} sequential POST /v1/embeddings in-process, instant model\n")
    print("| tracing | p50 µs | mean µs |\n|---|---|---|")
    for r in (off, on):
        print(f"| {r['mode']} | {r['p50_us']:.0f} | {r['mean_us']:.0f} |")
    print(f"\ntracing on adds {on['p50_us'] - off['p50_us']:.0f} µs at p50 (8 spans per request)\n")
    print("| per-request work with tracing off | µs |\n|---|---|")
    for name, us in off["pieces_us"].items():
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

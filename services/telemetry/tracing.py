"""OpenTelemetry tracing: one trace per request, from the ingress through the handle into the replica.

Configured only with the standard ``OTEL_*`` variables (they reach every replica through the runtime
environment that ``services.runner`` builds):

- tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set,
  unless ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``; spans go out over OTLP/HTTP
  (protobuf) in batches (``OTEL_BSP_*``);
- sampling is the SDK's: ``OTEL_TRACES_SAMPLER`` (default ``parentbased_always_on``) and
  ``OTEL_TRACES_SAMPLER_ARG``; the ingress decides, replicas follow the parent;
- ``OTEL_SERVICE_NAME`` (default ``raydio``) and ``OTEL_RESOURCE_ATTRIBUTES`` name the resource.

Off, no tracer provider is installed: the API's no-op tracer creates no spans and exports nothing.
The trace *context* still flows (an incoming ``traceparent`` or a random trace id from the ingress),
so response headers and JSON logs carry a trace id either way.

The W3C context crosses the handle boundary as a small dict in the ``trace_carrier`` keyword argument:
``ModelClient`` injects it, ``@entrypoint`` on a deployment method extracts it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

TRACER_NAME = "raydio"

_propagator = TraceContextTextMapPropagator()
_enabled = False


def tracing_requested(environ: dict[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for trace export (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup_tracing(component: str) -> bool:
    """Install an OTLP-exporting tracer provider in this process once, if the environment asks for one.

    ``component`` (``ingress``, ``embedder``, ...) becomes the ``raydio.component`` resource attribute.
    Returns whether tracing is on.
    """
    global _enabled
    if _enabled or not tracing_requested():
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource({"service.name": os.environ.get("OTEL_SERVICE_NAME", "raydio"), "raydio.component": component,
                         "process.pid": os.getpid()}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    logger.info("tracing on for %s: sampler %s, OTLP endpoint %s", component, provider.sampler.get_description(),
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return True


def tracing_enabled() -> bool:
    return _enabled


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


# --- context across processes -------------------------------------------------------------------

def inject(ctx: otel_context.Context | None = None) -> dict[str, str]:
    """``ctx`` (default: the current context) as a W3C carrier (``traceparent``, ``tracestate``) for a handle call."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=ctx)
    return carrier


def extract(carrier: dict[str, str] | None) -> otel_context.Context:
    """A context whose parent is the span in ``carrier`` (an empty context when there is none)."""
    return _propagator.extract(carrier or {}, context=otel_context.Context())


def root_context(headers: dict[str, str]) -> otel_context.Context:
    """With tracing off: the incoming ``traceparent``'s context if valid, else one with a fresh random trace id.

    The id lives in a non-recording span (nothing is exported), so logs and headers still carry one id
    per request and it flows into the replicas with the carrier.
    """
    ctx = extract(headers)
    if trace.get_current_span(ctx).get_span_context().is_valid:
        return ctx
    span_context = SpanContext(trace_id=int.from_bytes(secrets.token_bytes(16), "big") or 1,
                               span_id=int.from_bytes(secrets.token_bytes(8), "big") or 1,
                               is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def current_ids() -> tuple[str | None, str | None]:
    """(trace id, span id) of the current span as hex, or (None, None)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None, None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


@contextmanager
def attached(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def record_error(span: trace.Span, exc: BaseException) -> None:
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


# --- spans in the replicas ---------------------------------------------------------------------

def entrypoint(func: Callable) -> Callable:
    """Decorate a deployment method called through a handle: accept ``trace_carrier`` and open a SERVER span.

    The span is ``<model>.<method>`` (``model`` from the class attribute ``MODEL``), a child of the
    caller's handle span. Works for plain methods, coroutines and async generators (streams).
    """
    name = func.__name__

    if inspect.isasyncgenfunction(func):
        @functools.wraps(func)
        async def stream_wrapper(self, *args, trace_carrier: dict | None = None, **kwargs) -> AsyncIterator:
            span = tracer().start_span(f"{self.MODEL}.{name}", context=extract(trace_carrier), kind=SpanKind.SERVER)
            ctx = trace.set_span_in_context(span)
            stream = func(self, *args, **kwargs)
            try:
                while True:
                    # Current only while the generator runs: the consumer's context is not ours between items.
                    with attached(ctx):
                        try:
                            item = await stream.__anext__()
                        except StopAsyncIteration:
                            return
                    yield item
            except BaseException as exc:
                record_error(span, exc)
                raise
            finally:
                await stream.aclose()
                span.end()

        return stream_wrapper

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def wrapper(self, *args, trace_carrier: dict | None = None, **kwargs):
            with attached(extract(trace_carrier)), tracer().start_as_current_span(f"{self.MODEL}.{name}", kind=SpanKind.SERVER):
                return await func(self, *args, **kwargs)

        return wrapper

    @functools.wraps(func)
    def sync_wrapper(self, *args, trace_carrier: dict | None = None, **kwargs):
        with attached(extract(trace_carrier)), tracer().start_as_current_span(f"{self.MODEL}.{name}", kind=SpanKind.SERVER):
            return func(self, *args, **kwargs)

    return sync_wrapper


@contextmanager
def batch_spans(model: str, contexts: Sequence[otel_context.Context], inputs: int) -> Iterator[list[Link]]:
    """Spans for one ``@serve.batch`` call: a ``<model>.batch`` span in the trace of *every* request in it.

    The batch's own work (the forward pass) nests under the first request's batch span; pass the yielded
    links to its span so it points at the others. Each request's trace shows the batch it joined, and the
    forward pass is recorded once. ``contexts`` are the requests' contexts, captured where they queued.
    """
    if not _enabled:
        yield []
        return
    start = time.time_ns()
    attributes = {"raydio.model": model, "raydio.batch.requests": len(contexts), "raydio.batch.inputs": inputs}
    spans = [tracer().start_span(f"{model}.batch", context=ctx, start_time=start, attributes=attributes) for ctx in contexts]
    try:
        with attached(trace.set_span_in_context(spans[0])):
            yield [Link(other.get_span_context()) for other in spans[1:]]
    finally:
        end = time.time_ns()
        for span in spans:
            span.end(end_time=end)


@contextmanager
def span(name: str, links: Sequence[Link] = (), **attributes: Any) -> Iterator[trace.Span]:
    """An INTERNAL span under the current one (a forward pass, later a database call); errors mark it failed."""
    with tracer().start_as_current_span(name, attributes=attributes, links=links) as current:
        yield current

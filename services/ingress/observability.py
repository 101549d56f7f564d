"""The ingress side of telemetry: one ASGI middleware per request for ids, the root span and HTTP metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextlib import nullcontext

from opentelemetry import trace
from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.telemetry import tracing
from services.telemetry.logs import request_id_var
from services.telemetry.metrics import UNMATCHED_ROUTE, ingress_metrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
TRACE_ID_HEADER = "X-Trace-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def _route_template(scope: Scope, root_path: str) -> str:
    """The matched route's template (``/v1/models/{name}``, ``/ui/chat/gradio_api/queue/join``), never the raw path.

    Inside a mounted app (Gradio) the route is the inner one, prefixed with the mount path that routing
    appended to ``root_path``. A request refused before routing (authentication, rate limit, body size)
    is matched against the app's routes here; one that matches none is ``<unmatched>``.
    """
    route = scope.get("route")
    if route is None:
        return _match(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope) or UNMATCHED_ROUTE
    return scope.get("root_path", "")[len(root_path):] + route.path


def _match(routes, scope: Scope) -> str | None:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI >= 0.165 wraps each included router
        if included is not None:
            if found := _match(included.routes, scope):  # its routes' paths carry the APIRouter's prefix
                return found
        elif getattr(route, "path", None) and route.matches(scope)[0] != Match.NONE:
            return route.path
    return None


class RequestTelemetry:
    """Per request: accept or assign ``X-Request-ID``, make sure a trace context exists, count and time it by route.

    The HTTP server span itself is FastAPI's own (FastAPI >= 0.165 records one, named ``METHOD /route/template``,
    with the ``traceparent`` it received as parent, whenever a tracer provider is installed); this middleware
    runs inside it. With tracing off it continues the incoming ``traceparent`` or starts a random trace id,
    so the response's ``X-Trace-ID`` and the logs of every replica still share one id.

    The response carries ``X-Request-ID`` and ``X-Trace-ID``. Behind Serve's proxy, the proxy already
    assigns and echoes ``X-Request-ID`` (``echo_request_id=False`` keeps it from being sent twice).
    """

    def __init__(self, app: ASGIApp, echo_request_id: bool = True) -> None:
        self.app, self.echo_request_id = app, echo_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        method = scope["method"]
        status = 500
        span, ctx = trace.get_current_span(), None
        if not span.get_span_context().is_valid:  # tracing off: FastAPI started no span
            ctx = tracing.root_context(headers)
            span = trace.get_current_span(ctx)
        elif span.is_recording():
            span.set_attribute("raydio.request_id", request_id)
        trace_id = format(span.get_span_context().trace_id, "032x")

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = MutableHeaders(scope=message)
                if self.echo_request_id:
                    response_headers[REQUEST_ID_HEADER] = request_id
                response_headers[TRACE_ID_HEADER] = trace_id
            await send(message)

        token = request_id_var.set(request_id)
        try:
            with tracing.attached(ctx) if ctx is not None else nullcontext():
                try:
                    await self.app(scope, receive, send_with_ids)
                finally:
                    route = _route_template(scope, root_path)
                    seconds = time.perf_counter() - started
                    ingress_metrics().observe_http(route, method, status, seconds)
                    logger.info("%s %s %s", method, route, status,
                                extra={"http_status": status, "duration_ms": round(seconds * 1000, 2)})
        finally:
            request_id_var.reset(token)

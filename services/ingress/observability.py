"""The ingress side of telemetry: one ASGI middleware per request for ids, the root span and HTTP metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.datastructures import MutableHeaders
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
    appended to ``root_path``.
    """
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return UNMATCHED_ROUTE
    return scope.get("root_path", "")[len(root_path):] + path


class RequestTelemetry:
    """Per request: accept or assign ``X-Request-ID``, continue or start the trace, time it by route template.

    The response carries ``X-Request-ID`` and ``X-Trace-ID``. Behind Serve's proxy, the proxy already
    assigns and echoes ``X-Request-ID`` (set ``echo_request_id=False`` so it is not sent twice).
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
        token = request_id_var.set(request_id)
        span = tracing.tracer().start_span(
            method, context=tracing.root_context(headers), kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"], "raydio.request_id": request_id},
        )
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

        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                try:
                    await self.app(scope, receive, send_with_ids)
                except BaseException as exc:
                    tracing.record_error(span, exc)
                    raise
                finally:
                    route = _route_template(scope, root_path)
                    seconds = time.perf_counter() - started
                    ingress_metrics().observe_http(route, method, status, seconds)
                    logger.info("%s %s %s", method, route, status,
                                extra={"http_status": status, "duration_ms": round(seconds * 1000, 2)})
                    if span.is_recording():
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
                        span.set_attribute("http.response.status_code", status)
                        if status >= 500:
                            span.set_status(Status(StatusCode.ERROR))
        finally:
            span.end()
            request_id_var.reset(token)

"""Structured logs: one JSON object per line with the request id and trace id of the request being served.

The request id is the ``X-Request-ID`` the ingress accepted (Serve's proxy sets one when the client sent
none, and Serve carries it into every handle call); the trace id is the current OpenTelemetry trace's.
So a line logged in the embedder replica carries the same two ids as the ingress's line and the
response headers the client saw.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

from services.telemetry.tracing import current_ids

request_id_var: ContextVar[str | None] = ContextVar("raydio_request_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def current_request_id() -> str | None:
    """The request id set by the ingress middleware, else the one Serve carries with the request."""
    request_id = request_id_var.get()
    if request_id:
        return request_id
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or None
    except Exception:  # noqa: BLE001 - outside a replica, or Serve changed its private API
        return None


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", "trace_id", "span_id", ...extra}``."""

    def __init__(self, component: str | None = None) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": self.component,
            "request_id": current_request_id(),
            "trace_id": trace_id,
            "span_id": span_id,
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps({key: value for key, value in entry.items() if value is not None}, default=str)


def configure_logging(level: str = "INFO", component: str | None = None, json_format: bool = True) -> None:
    """Send raydio's loggers (``services.*``) to stderr, as JSON lines unless ``json_format`` is off.

    Idempotent: a second call replaces the handler. Ray collects a replica's stderr into its worker log
    (and shows it on the driver), so these lines end up wherever Ray's logs go.
    """
    root = logging.getLogger("services")
    for handler in [h for h in root.handlers if getattr(h, "_raydio", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._raydio = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter(component) if json_format else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False

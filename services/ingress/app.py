"""The one FastAPI factory. It runs on the Serve replica (or in a test), never at import time."""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from services.config import IngressArgs, Settings, get_settings
from services.core.services import Core
from services.ingress.auth import Authenticator, AuthMiddleware
from services.ingress.errors import error_body_for
from services.ingress.observability import RequestTelemetry
from services.ingress.openapi import document_app_wide_responses
from services.ingress.routes import agents, auth, frontend, health, index, jobs, openai, remote, sessions, tensors, v2

logger = logging.getLogger(__name__)

DESCRIPTION = """PyTorch models on Ray Serve, declared in a model catalogue: OpenAI-compatible embeddings and chat
(`/v1`), tensor models over KServe V1 (`/v1/models/{name}:predict`) and the Open Inference Protocol (KServe V2,
`/v2`), classifiers at `/v1/{name}/classify`, an MCP endpoint (`/mcp/`) and Gradio UIs under `/ui/<name>/`.
Errors are `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape), except under
`/v2`, where they are the protocol's `{"error": "..."}`."""


# Request header limits (431 beyond): nginx's default buffers hold 4 x 8 KiB; some servers (uvicorn with httptools)
# set none, so the ingress does, the same behind every server.
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 128


class BodySizeLimit:
    """Reject bodies over ``max_bytes`` with 413, by header or by counting a streamed body; oversized headers with 431."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope["headers"]
        header_bytes = sum(len(name) + len(value) + 4 for name, value in headers)
        if len(headers) > MAX_HEADERS or header_bytes > MAX_HEADER_BYTES:
            return await self._reject(scope, send, 431, f"Request headers are too large ({len(headers)} headers, "
                                      f"{header_bytes} bytes); at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes.",
                                      "headers_too_large")
        length = dict(headers).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reject(scope, send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send, status: int = 413, message: str | None = None,
                      code: str = "payload_too_large") -> None:
        import json

        message = message or f"Request body exceeds the limit of {self.max_bytes} bytes."
        body = json.dumps(error_body_for(scope, message, "invalid_request_error", code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI's body reader passes it on as a 413 instead of its generic 400 "error parsing
    the body" (a chunked body, with no Content-Length to refuse early, is only found too large while read)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Request body exceeds the limit of {max_bytes} bytes.")


def build_authenticator(args: IngressArgs, settings: Settings) -> Authenticator | None:
    if not args.auth.enabled:
        logger.warning("authentication is DISABLED by configuration (ingress.auth.enabled: false)")
        return None
    if settings.jwt_secret is None:
        raise RuntimeError("Authentication is on but RAYDIO_JWT_SECRET is not set; every ingress replica needs the same one.")
    return Authenticator(settings.database_url, settings.jwt_secret.get_secret_value(), args.auth)


def build_ingress_app(core: Core, args: IngressArgs | None = None, settings: Settings | None = None,
                      behind_serve_proxy: bool = False) -> FastAPI:
    """Build the FastAPI app: REST routers, error handlers, auth, body limit, telemetry and (optionally) the Gradio UIs.

    ``behind_serve_proxy``: Serve's proxy assigns and echoes ``X-Request-ID`` itself.
    """
    from services.ingress.errors import add_exception_handlers

    args = args or IngressArgs()
    settings = settings or get_settings()
    mcp_server = None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        # A mounted app's lifespan never runs: the MCP session manager runs in the ingress app's (on the replica).
        async with mcp_server.session_manager.run() if mcp_server else contextlib.nullcontext():
            yield

    app = FastAPI(title="raydio", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.core = core
    app.state.settings = settings
    app.state.authenticator = build_authenticator(args, settings)
    app.state.uis = {}
    add_exception_handlers(app)
    document_app_wide_responses(app)
    for module in (index, health, auth, openai, tensors, sessions, agents, jobs, remote, frontend, v2):
        app.include_router(module.router)
    if args.mcp.enabled:
        from services.ingress.mcp_server import build_mcp_app, build_mcp_server

        mcp_server = build_mcp_server(core)
        # a plain sub-app: app-wide middleware (auth, body limit) covers it
        app.mount("/mcp", build_mcp_app(mcp_server, args.mcp, args.limits.max_body_bytes))
    if args.mount_ui:
        _mount_uis(app, core)
    app.add_middleware(BodySizeLimit, max_bytes=args.limits.max_body_bytes)
    # Outside everything but telemetry: nothing (REST, Gradio, docs, MCP) is reached without credentials.
    app.add_middleware(AuthMiddleware, authenticator=app.state.authenticator, default_limit=args.auth.rate_limit_per_minute)
    # Outermost of all: every response, refusals by auth and limits included, carries its ids and is counted.
    app.add_middleware(RequestTelemetry, echo_request_id=not behind_serve_proxy)
    return app


def _mount_uis(app: FastAPI, core: Core) -> None:
    import gradio as gr

    from services.ingress.ui import ui_pages

    for page in ui_pages(core):
        gr.mount_gradio_app(app, page.build(), path=f"/ui/{page.name}", footer_links=["api"])
        app.state.uis[page.name] = page.description

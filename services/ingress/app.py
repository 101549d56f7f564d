"""The one FastAPI factory. It runs on the Serve replica (or in a test), never at import time."""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from services.config import IngressArgs, Settings, get_settings
from services.core.services import Core
from services.ingress.auth import Authenticator, AuthMiddleware
from services.ingress.errors import error_body_for
from services.ingress.observability import RequestTelemetry
from services.ingress.routes import agents, auth, frontend, health, index, jobs, openai, remote, sessions, tensors, v2

logger = logging.getLogger(__name__)

DESCRIPTION = """PyTorch models on Ray Serve, declared in a model catalogue: OpenAI-compatible embeddings and chat
(`/v1`), tensor models over KServe V1 (`/v1/models/{name}:predict`) and the Open Inference Protocol (KServe V2,
`/v2`), classifiers at `/v1/{name}/classify`, an MCP endpoint (`/mcp/`) and Gradio UIs under `/ui/<name>/`.
Errors are `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape), except under
`/v2`, where they are the protocol's `{"error": "..."}`."""


class BodySizeLimit:
    """Reject bodies over ``max_bytes`` with 413, by header or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
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
                    raise _TooLarge()
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

    async def _reject(self, scope: Scope, send: Send) -> None:
        import json

        body = json.dumps(error_body_for(scope, f"Request body exceeds the limit of {self.max_bytes} bytes.",
                                         "invalid_request_error", "payload_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


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

"""Login for browsers (a page and a session cookie), tokens for clients, and API key management."""

from __future__ import annotations

from html import escape
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from services.errors import InvalidInput, NotFound
from services.ingress.auth import COOKIE_NAME, Authenticator, Principal
from services.ingress.dependencies import require_scope
from services.ingress.schemas import ERROR_RESPONSES
from services.storage.db import run_in_session
from services.storage.repositories import KeyRepository

router = APIRouter(tags=["auth"], responses={k: v for k, v in ERROR_RESPONSES.items() if k in (400, 404)})


def get_principal(request: Request) -> Principal:
    return request.state.principal


def get_authenticator(request: Request) -> Authenticator:
    authenticator = request.app.state.authenticator
    if authenticator is None:
        raise InvalidInput("Authentication is disabled in this deployment's configuration.")
    return authenticator


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]
ADMIN_ONLY = require_scope("admin")


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _login_page(next_url: str, error: str | None = None) -> str:
    message = f"<p class=err role=alert>{escape(error)}</p>" if error else ""
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>raydio · log in</title>
<meta name=viewport content="width=device-width,initial-scale=1"><style>
body{{font:15px/1.5 system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;color:#222}}
form{{border:1px solid #ddd;border-radius:8px;padding:2rem;min-width:22rem}}input{{width:100%;padding:.5rem;margin:.5rem 0}}
button{{padding:.5rem 1rem}}.err{{color:#b3261e}}</style></head><body>
<form method=post action="/login"><h1>raydio</h1>{message}<label for=api_key>API key</label>
<input id=api_key name=api_key type=password autocomplete=current-password required placeholder="rdk_...">
<input type=hidden name=next value="{escape(next_url)}"><button type=submit>Log in</button></form></body></html>"""


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(next: str | None = None) -> HTMLResponse:
    return HTMLResponse(_login_page(_safe_next(next)))


@router.post("/login", include_in_schema=False)
async def login(request: Request, authenticator: AuthenticatorDep, api_key: Annotated[str, Form()],
                next: Annotated[str, Form()] = "/") -> Response:
    principal = await run_in_threadpool(authenticator.principal_for_key, api_key.strip())
    if principal is None:
        return HTMLResponse(_login_page(_safe_next(next), "That API key is not valid or has been revoked."), status_code=401)
    token, ttl = authenticator.issue_token(principal)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE_NAME, token, max_age=ttl, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.get("/logout", include_in_schema=False)
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
    scope: str


@router.post("/v1/auth/token", response_model=TokenResponse)
async def mint_token(principal: CurrentPrincipal, authenticator: AuthenticatorDep) -> TokenResponse:
    """Exchange the API key in `Authorization: Bearer` for a short-lived JWT with the same scopes."""
    if principal.via != "api_key":
        raise InvalidInput("Tokens are minted from an API key, not from another token or a session cookie.")
    token, ttl = authenticator.issue_token(principal)
    return TokenResponse(access_token=token, expires_in=ttl, scope=" ".join(sorted(principal.scopes)))


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["ci-pipeline"])
    scopes: list[Literal["inference", "admin"]] = Field(default_factory=lambda: ["inference"], min_length=1)
    rate_limit_per_minute: int | None = Field(None, ge=1, description="Overrides the default per-key limit.")

    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"name": "ci-pipeline", "scopes": ["inference"], "rate_limit_per_minute": 120}]}}


class KeyInfo(BaseModel):
    id: str
    name: str
    scopes: list[str]
    rate_limit_per_minute: int | None
    created_at: str
    revoked: bool


class CreatedKeyInfo(KeyInfo):
    key: str = Field(description="The secret. Shown once; store it now.")


def _info(key) -> dict:
    return {"id": key.id, "name": key.name, "scopes": key.scopes.split(), "rate_limit_per_minute": key.rate_limit_per_minute,
            "created_at": key.created_at.isoformat(), "revoked": key.revoked_at is not None}


@router.post("/v1/keys", response_model=CreatedKeyInfo, status_code=201, dependencies=[ADMIN_ONLY])
async def create_key(body: KeyCreate, authenticator: AuthenticatorDep) -> CreatedKeyInfo:
    """Create an API key (admin scope). The secret is in the response once and stored only as a hash."""
    def create(s) -> CreatedKeyInfo:
        created = KeyRepository.create(s, body.name, list(body.scopes), body.rate_limit_per_minute)
        return CreatedKeyInfo(**_info(created.key), key=created.secret)

    return await run_in_session(authenticator.database_url, create)


@router.get("/v1/keys", response_model=list[KeyInfo], dependencies=[ADMIN_ONLY])
async def list_keys(authenticator: AuthenticatorDep) -> list[KeyInfo]:
    """List API keys (admin scope); secrets are never shown again."""
    return await run_in_session(authenticator.database_url, lambda s: [KeyInfo(**_info(k)) for k in KeyRepository.list(s)])


@router.delete("/v1/keys/{key_id}", status_code=204, dependencies=[ADMIN_ONLY])
async def revoke_key(key_id: str, authenticator: AuthenticatorDep) -> Response:
    """Revoke an API key (admin scope); tokens minted from it stop working within the key cache time."""
    if not await run_in_session(authenticator.database_url, lambda s: KeyRepository.revoke(s, key_id)):
        raise NotFound(f"No active key with id {key_id!r}.", "key_id")
    return Response(status_code=204)


"""Authentication and authorisation for every route the ingress serves (REST, Gradio, docs), except /health/*.

Credentials: an API key (``rdk_...``, stored hashed) or a short-lived JWT minted from one, sent as
``Authorization: Bearer``; a browser gets a login page and an HttpOnly session cookie holding a JWT.
Scopes: ``inference`` for the models, ``admin`` for key management. Per-key token-bucket rate limits
answer 429 with ``Retry-After``; the buckets live in one store shared by every api and ui replica (the api
application's ``ratelimit`` deployment), so a key's limit holds in total.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import quote

import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from services.config import AuthArgs
from services.core.ratelimit import TokenBuckets
from services.ingress.errors import error_body_for
from services.storage.db import session_scope
from services.storage.repositories import KEY_PREFIX, KeyRepository
from services.telemetry.metrics import auth_metrics

logger = logging.getLogger(__name__)

COOKIE_NAME = "raydio_session"
OPEN_PREFIXES = ("/health/", "/v2/health/")  # probes (Kubernetes, KServe tooling) carry no credentials
LOGIN_PATHS = ("/login", "/logout")
SCOPES = ("inference", "admin")
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    rate_limit_per_minute: int | None = None
    via: str = "api_key"  # api_key | token | cookie | disabled


ANONYMOUS_LOCAL = Principal("local", "local (auth disabled)", frozenset(SCOPES), via="disabled")


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class RateLimiter:
    """A token bucket per key, in this replica: with N replicas a key gets N times its limit."""

    def __init__(self) -> None:
        self.buckets = TokenBuckets()

    def check(self, key: str, limit_per_minute: int) -> float:
        """0 when allowed; otherwise the seconds until the next request would be."""
        return self.buckets.take(key, limit_per_minute)

    async def acquire(self, key: str, limit_per_minute: int) -> float:
        return self.check(key, limit_per_minute)


class SharedRateLimiter(RateLimiter):
    """Token buckets in the api application's ``ratelimit`` deployment, so a key's limit holds in total across every
    api and ui replica.

    A replica leases a key's tokens a few at a time: as many as the key earns in ``lease_s`` (one for limits under
    60/min), spends them locally, and hands back what it did not spend with its next lease. Leased tokens left the
    shared bucket, so the replicas together never admit more than the limit; the store is asked about once per
    lease instead of once per request. If it does not answer within ``timeout_s`` (restarting, unreachable), this
    replica's own bucket decides, so requests never wait on it; each fallback is counted."""

    FIRST_TIMEOUT_S = 5.0  # a handle's first call also finds the store's replica
    MAX_LEASES = 100_000

    def __init__(self, store, timeout_s: float = 0.5, lease_s: float = 1.0) -> None:
        super().__init__()
        self.store, self.timeout_s, self.lease_s = store, timeout_s, lease_s  # store: a handle, or a callable giving one
        self._warned = False
        self._answered = False
        self._leases: dict[str, tuple[float, int]] = {}  # key -> (valid until, tokens left)
        self.store_calls = 0

    def _handle(self):
        if callable(self.store) and not hasattr(self.store, "remote"):
            self.store = self.store()
        return self.store

    async def acquire(self, key: str, limit_per_minute: int) -> float:
        now = time.monotonic()
        until, left = self._leases.get(key, (0.0, 0))
        if left > 0 and now < until:
            self._leases[key] = (until, left - 1)
            return 0.0
        self._leases.pop(key, None)
        want = max(1, int(limit_per_minute / 60.0 * self.lease_s))
        try:
            self.store_calls += 1
            granted, retry_after = await asyncio.wait_for(
                self._handle().lease.remote(key, limit_per_minute, want, left),
                self.timeout_s if self._answered else self.FIRST_TIMEOUT_S)
            self._warned, self._answered = False, True
        except Exception as exc:  # noqa: BLE001 - any failure of the store: decide here, never fail the request
            auth_metrics().rate_limit_fallbacks.inc()
            if not self._warned:
                logger.warning("rate-limit store unavailable (%s); this replica's own buckets decide until it answers",
                               type(exc).__name__)
                self._warned = True
            return self.check(key, limit_per_minute)
        if granted < 1:
            return retry_after
        if granted > 1:
            if len(self._leases) >= self.MAX_LEASES:
                self._leases.clear()  # unspent tokens are lost, never over-admitted
            # Requests that miss together each lease while the others' calls are in flight: add to a lease one of them
            # stored meanwhile instead of replacing it, or its unspent tokens are lost and the key is refused early.
            now = time.monotonic()
            until, held = self._leases.get(key, (0.0, 0))
            self._leases[key] = (now + self.lease_s, (held if now < until else 0) + granted - 1)
        return 0.0


class Authenticator:
    def __init__(self, database_url: str, jwt_secret: str, args: AuthArgs, limiter: RateLimiter | None = None) -> None:
        self.database_url, self.secret, self.args = database_url, jwt_secret, args
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self.limiter = limiter or RateLimiter()

    # --- keys and tokens ------------------------------------------------------------------------

    def _cached(self, cache_key: str, load) -> Principal | None:
        hit = self._cache.get(cache_key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.args.key_cache_s:
            return hit[1]
        principal = load()
        if len(self._cache) >= 10_000:  # bounded: a flood of made-up keys must not grow memory
            self._cache.clear()
        self._cache[cache_key] = (now, principal)
        return principal

    def _principal_from_key(self, key) -> Principal | None:
        if key is None or key.revoked_at is not None:
            return None
        return Principal(key.id, key.name, frozenset(key.scopes.split()), key.rate_limit_per_minute)

    def principal_for_key(self, secret: str) -> Principal | None:
        def load():
            with session_scope(self.database_url) as session:
                return self._principal_from_key(KeyRepository.find_active(session, secret))

        return self._cached("secret:" + secret, load)

    def principal_for_key_id(self, key_id: str) -> Principal | None:
        def load():
            with session_scope(self.database_url) as session:
                return self._principal_from_key(KeyRepository.get(session, key_id))

        return self._cached("id:" + key_id, load)

    def issue_token(self, principal: Principal) -> tuple[str, int]:
        now = int(time.time())
        claims = {"sub": principal.key_id, "scope": " ".join(sorted(principal.scopes)), "iat": now,
                  "exp": now + self.args.token_ttl_s, "iss": "raydio"}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), self.args.token_ttl_s

    def principal_for_token(self, token: str, via: str) -> Principal:
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], issuer="raydio",
                                options={"require": ["exp", "sub", "iss"]})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "The token has expired. Log in again or mint a new one at POST /v1/auth/token.") from None
        except jwt.InvalidTokenError:
            raise AuthError(401, "The credentials are not valid (malformed or tampered token, or wrong API key).") from None
        key = self.principal_for_key_id(claims["sub"])
        if key is None:
            raise AuthError(401, "The key this token was minted from has been revoked.")
        # A token never carries more than its key still has.
        scopes = frozenset(claims.get("scope", "").split()) & key.scopes
        return Principal(key.key_id, key.name, scopes, key.rate_limit_per_minute, via)

    def authenticate(self, bearer: str | None, cookie: str | None) -> Principal:
        if bearer:
            if bearer.startswith(KEY_PREFIX):
                principal = self.principal_for_key(bearer)
                if principal is None:
                    raise AuthError(401, "The API key is not valid or has been revoked.")
                return principal
            return self.principal_for_token(bearer, "token")
        if cookie:
            return self.principal_for_token(cookie, "cookie")
        raise AuthError(401, "Missing credentials. Send 'Authorization: Bearer <API key or token>' or log in at /login.")


def is_open(path: str) -> bool:
    return path.startswith(OPEN_PREFIXES) or path in LOGIN_PATHS


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class AuthMiddleware:
    """Pure ASGI, so it covers everything mounted in the app: routers, Gradio sub-apps, streaming responses."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator | None, default_limit: int = 600) -> None:
        self.app, self.auth, self.default_limit = app, authenticator, default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        state = scope.setdefault("state", {})
        if self.auth is None:
            state["principal"] = ANONYMOUS_LOCAL
            return await self.app(scope, receive, send)
        if is_open(path):
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        authorization = headers.get("authorization", "")
        bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        try:
            if authorization and bearer is None:
                raise AuthError(401, "Unsupported Authorization scheme. Use 'Authorization: Bearer <API key or token>'.")
            # a key lookup may touch the database: keep it off the event loop
            principal = await asyncio.to_thread(self.auth.authenticate, bearer, _cookie(headers, COOKIE_NAME))
            # Who the caller is, for every mounted app; what a route needs beyond it is the route's own dependency.
            if "inference" not in principal.scopes:
                raise AuthError(403, f"This key lacks the 'inference' scope needed for {path}.")
        except AuthError as exc:
            auth_metrics().failures.inc(tags={"reason": "unauthenticated" if exc.status == 401 else "forbidden"})
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
            if exc.status == 401 and _wants_html(scope, headers):
                return await _redirect_to_login(scope, send)
            return await _reject(scope, send, exc.status, exc.message,
                                 "authentication_error" if exc.status == 401 else "permission_error")
        retry_after = await self.auth.limiter.acquire(principal.key_id, principal.rate_limit_per_minute or self.default_limit)
        if retry_after > 0:
            auth_metrics().rate_limited.inc()
            return await _reject(scope, send, 429, f"Rate limit exceeded for key {principal.name!r}. Retry after the delay in Retry-After.",
                                 "rate_limit_error", {"retry-after": str(math.ceil(retry_after))})
        state["principal"] = principal
        await self.app(scope, receive, send)


def _wants_html(scope: Scope, headers: dict[str, str]) -> bool:
    return scope["type"] == "http" and scope.get("method") == "GET" and "text/html" in headers.get("accept", "")


async def _redirect_to_login(scope: Scope, send: Send) -> None:
    # Serve (like uvicorn) keeps the mount prefix in the path and also sets it as root_path (the ui application's /ui).
    root, path = scope.get("root_path", ""), scope["path"]
    target = (path if path.startswith(root) else root + path) + ("?" + scope["query_string"].decode() if scope.get("query_string") else "")
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", f"/login?next={quote(target, safe='')}".encode())]})
    await send({"type": "http.response.body", "body": b""})


async def _reject(scope: Scope, send: Send, status: int, message: str, type_: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body_for(scope, message, type_, type_)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="raydio"'))
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""Authentication over the whole app, Gradio mounts included, with a real SQLite key store."""

from __future__ import annotations

import re
import time

import jwt
import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from services.config import AuthArgs, IngressArgs, LimitsArgs, Settings
from services.ingress.app import build_ingress_app
from services.ingress.auth import is_open
from services.storage.db import migrate, session_scope
from services.storage.repositories import KeyRepository

SECRET = "unit-test-secret-" + "x" * 32


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('auth')}/raydio.db"
    migrate(url)
    with session_scope(url) as session:
        created = {
            "admin": KeyRepository.create(session, "admin", ["admin", "inference"]).secret,
            "user": KeyRepository.create(session, "user", ["inference"]).secret,
            "limited": KeyRepository.create(session, "limited", ["inference"], rate_limit_per_minute=3).secret,
            "revoked": KeyRepository.create(session, "revoked", ["inference"]),
        }
        KeyRepository.revoke(session, created["revoked"].key.id)
        created["revoked"] = created["revoked"].secret
    return url, created


@pytest.fixture(scope="module")
def app(keys, core):
    url, _ = keys
    settings = Settings(database_url=url, jwt_secret=SECRET)
    args = IngressArgs(limits=LimitsArgs(), mount_ui=True, auth=AuthArgs(key_cache_s=0, token_ttl_s=600))
    return build_ingress_app(core, args, settings)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def every_route(routes, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route in the app and, recursively, in each mounted app, path parameters filled in."""
    found = []
    for route in routes:
        if isinstance(route, Mount):
            found += every_route(route.routes, prefix + route.path)
        elif hasattr(route, "effective_candidates"):  # FastAPI's lazily included routers
            found += every_route(route.effective_candidates(), prefix)
        elif getattr(route, "methods", None):
            found += [(method, _concrete(prefix + route.path)) for method in sorted(route.methods)]
    return found


def test_every_route_refuses_requests_without_credentials(app, client, keys):
    routes = every_route(app.routes)
    gradio = [path for _, path in routes if path.startswith("/ui/")]
    assert len(gradio) > 100 and any("queue/join" in p for p in gradio) and any("upload" in p for p in gradio)
    assert ("POST", "/v1/chat/completions") in routes and ("GET", "/docs") in routes
    checked = 0
    for method, path in routes:
        if is_open(path):
            continue
        response = client.request(method, path, headers={"Accept": "application/json"})
        assert response.status_code == 401, f"{method} {path} answered {response.status_code} without credentials"
        assert response.headers["www-authenticate"].startswith("Bearer")
        checked += 1
    assert checked > 150
    spec_paths = client.get("/openapi.json", headers=bearer(keys[1]["admin"])).json()["paths"]
    for path, operations in spec_paths.items():
        for method in operations:
            if not is_open(path):
                assert client.request(method.upper(), _concrete(path)).status_code == 401, path


def test_health_stays_open(client):
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/v2/health/live").status_code == 200  # the Open Inference Protocol's probes too
    assert client.get("/v2/health/ready").status_code == 200


def test_v2_and_mcp_need_the_same_credentials(client, keys):
    refused = client.get("/v2/models/digits")
    assert refused.status_code == 401 and "Missing credentials" in refused.json()["error"]  # the protocol's shape
    assert client.get("/v2/models/digits", headers=bearer(keys[1]["user"])).status_code == 200
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream", "Host": "localhost:8000"}
    assert client.post("/mcp/", json=rpc, headers=accept).status_code == 401
    listed = client.post("/mcp/", json=rpc, headers={**accept, **bearer(keys[1]["user"])})
    assert listed.status_code == 200 and "classify_image" in listed.text


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "Missing credentials"),
        (bearer("rdk_not-a-real-key"), "not valid or has been revoked"),
        (bearer("not.a.jwt"), "malformed or tampered"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Unsupported Authorization scheme"),
    ],
)
def test_bad_credentials_are_401_with_a_reason(client, headers, needle):
    response = client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert needle in response.json()["error"]["message"]


def test_revoked_key_is_refused(client, keys):
    response = client.get("/v1/models", headers=bearer(keys[1]["revoked"]))
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_tokens_expire_and_cannot_be_tampered_with(client, keys):
    token = client.post("/v1/auth/token", headers=bearer(keys[1]["user"])).json()
    assert token["token_type"] == "bearer" and token["scope"] == "inference" and token["expires_in"] == 600
    assert client.get("/v1/models", headers=bearer(token["access_token"])).status_code == 200
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    forged = jwt.encode({**claims, "scope": "admin inference"}, "a-guessed-secret-that-is-long-enough-0123456789", algorithm="HS256")
    assert "tampered" in client.get("/v1/keys", headers=bearer(forged)).json()["error"]["message"]
    expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")
    response = client.get("/v1/models", headers=bearer(expired))
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
    # a token cannot mint more tokens
    assert client.post("/v1/auth/token", headers=bearer(token["access_token"])).status_code == 400


def test_admin_scope_guards_key_management(client, keys):
    response = client.get("/v1/keys", headers=bearer(keys[1]["user"]))
    assert response.status_code == 403 and "'admin' scope" in response.json()["error"]["message"]
    created = client.post("/v1/keys", json={"name": "ci", "scopes": ["inference"]}, headers=bearer(keys[1]["admin"]))
    assert created.status_code == 201
    secret = created.json()["key"]
    listed = client.get("/v1/keys", headers=bearer(keys[1]["admin"])).json()
    assert secret not in str(listed) and "ci" in [k["name"] for k in listed]
    assert client.get("/v1/models", headers=bearer(secret)).status_code == 200
    assert client.delete(f"/v1/keys/{created.json()['id']}", headers=bearer(keys[1]["admin"])).status_code == 204
    assert client.get("/v1/models", headers=bearer(secret)).status_code == 401
    bad = client.post("/v1/keys", json={"name": "x", "scopes": ["root"]}, headers=bearer(keys[1]["admin"]))
    assert bad.status_code == 400 and "scopes" in bad.json()["error"]["message"]


def test_rate_limit_is_429_with_retry_after(client, keys):
    statuses = [client.get("/health/live").status_code for _ in range(5)]  # open routes are not counted
    assert statuses == [200] * 5
    answers = [client.get("/v1/models", headers=bearer(keys[1]["limited"])) for _ in range(5)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    limited = answers[3]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "Rate limit" in limited.json()["error"]["message"]


def test_browser_gets_a_login_page_and_a_session_cookie(client, keys):
    page = client.get("/ui/chat/", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fui%2Fchat%2F"
    assert "API key" in client.get(page.headers["location"]).text
    wrong = client.post("/login", data={"api_key": "rdk_wrong", "next": "/ui/chat/"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    login = client.post("/login", data={"api_key": keys[1]["user"], "next": "/ui/chat/"})
    assert login.status_code == 303 and login.headers["location"] == "/ui/chat/"
    cookie = login.cookies["raydio_session"]
    assert "httponly" in login.headers["set-cookie"].lower()
    client.cookies.set("raydio_session", cookie)
    ui = client.get("/ui/chat/", headers={"Accept": "text/html"})
    assert ui.status_code == 200 and "gradio" in ui.text.lower()
    assert client.get("/ui/chat/config").status_code == 200
    client.cookies.clear()
    assert client.post("/login", data={"api_key": keys[1]["user"], "next": "//evil.example"}).headers["location"] == "/"
    client.cookies.clear()


def test_a_key_sees_only_its_own_sessions(client, keys):
    mine = client.post("/v1/sessions", json={"title": "mine"}, headers=bearer(keys[1]["user"])).json()
    assert client.get(f"/v1/sessions/{mine['id']}", headers=bearer(keys[1]["user"])).status_code == 200
    theirs = client.get(f"/v1/sessions/{mine['id']}", headers=bearer(keys[1]["admin"]))
    assert theirs.status_code == 404  # not 403: another key's session does not exist for you
    assert mine["id"] not in [s["id"] for s in client.get("/v1/sessions", headers=bearer(keys[1]["admin"])).json()]
    assert client.delete(f"/v1/sessions/{mine['id']}", headers=bearer(keys[1]["admin"])).status_code == 404
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "session_id": mine["id"]}
    assert client.post("/v1/chat/completions", json=chat, headers=bearer(keys[1]["admin"])).status_code == 404


# --- the front door: one limit across replicas, and the ui application ---------------------------------------


class StoreHandle:
    """A stand-in for the ratelimit deployment's handle: the real TokenBuckets behind ``take.remote``, shared by the
    replicas' limiters the way the deployment is."""

    def __init__(self, fail: bool = False) -> None:
        from services.deployments.ratelimit import RateLimitDeployment

        self.store = RateLimitDeployment.func_or_class()
        self.fail, self.calls = fail, 0
        self.lease = self

    async def remote(self, key: str, limit: int, want: int, returned: int) -> tuple[int, float]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("store down")
        return await self.store.lease(key, limit, want, returned)


def _replica(core, url: str, limiter, name: str, ui: bool = False):
    from services.config import UIArgs
    from services.ingress.app import build_ui_ingress_app

    settings = Settings(database_url=url, jwt_secret=SECRET)
    args = IngressArgs(auth=AuthArgs(key_cache_s=0))
    if ui:
        return build_ui_ingress_app(core, args, UIArgs(), settings, replica=name, limiter=limiter)
    return build_ingress_app(core, args, settings, replica=name, limiter=limiter)


def test_a_keys_limit_holds_in_total_across_replicas_sharing_the_store(keys, core):
    from services.ingress.auth import RateLimiter, SharedRateLimiter

    url, secrets = keys
    store = StoreHandle()
    replicas = [_replica(core, url, SharedRateLimiter(store), f"api-{i}") for i in range(2)]
    replicas.append(_replica(core, url, SharedRateLimiter(lambda: store), "ui", ui=True))  # lazily resolved handle
    clients = [TestClient(app, raise_server_exceptions=False, root_path="/ui" if i == 2 else "") for i, app in enumerate(replicas)]
    paths = ["/v1/models", "/v1/models", "/ui/chat/config"]
    answers = [clients[i % 3].get(paths[i % 3], headers=bearer(secrets["limited"])) for i in range(9)]
    assert sum(a.status_code == 200 for a in answers) == 3, [a.status_code for a in answers]  # limit 3/min, in total
    refused = [a for a in answers if a.status_code == 429]
    assert {a.headers["X-Raydio-Replica"] for a in refused} == {"api-0", "api-1", "ui"}
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    # Per-replica buckets (shared_rate_limits: false) give each replica the whole limit: what the store prevents.
    separate = [_replica(core, url, RateLimiter(), f"api-{i}") for i in range(2)]
    with TestClient(separate[0]) as one, TestClient(separate[1]) as two:
        allowed = sum(c.get("/v1/models", headers=bearer(secrets["limited"])).status_code == 200
                      for _ in range(4) for c in (one, two))
    assert allowed == 6


def test_an_unreachable_store_falls_back_to_the_replicas_own_bucket(keys, core):
    from services.ingress.auth import SharedRateLimiter

    url, secrets = keys
    store = StoreHandle(fail=True)
    with TestClient(_replica(core, url, SharedRateLimiter(store), "api-0")) as client:
        statuses = [client.get("/v1/models", headers=bearer(secrets["limited"])).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429] and store.calls == 5


def test_the_ui_application_takes_the_same_credentials_under_its_route_prefix(keys, core):
    url, secrets = keys
    app = _replica(core, url, None, "ui-0", ui=True)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False, root_path="/ui") as client:
        page = client.get("/ui/chat/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fui%2Fchat%2F"
        assert page.headers["X-Raydio-Replica"] == "ui-0"
        assert client.get("/ui/chat/config").status_code == 401
        with_key = client.get("/ui/chat/config", headers=bearer(secrets["user"]))
        assert with_key.status_code == 200 and with_key.json()["root"].endswith("/ui/chat")
        token = jwt.encode({"sub": _key_id(url, "user"), "scope": "inference", "iss": "raydio",
                            "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        assert client.get("/ui/chat/config", headers=bearer(token)).status_code == 200
        client.cookies.set("raydio_session", token)  # what /login on the api application sets
        assert client.get("/ui/chat/", headers={"Accept": "text/html"}).status_code == 200
        assert {r.path for r in app.routes if isinstance(r, Mount)} >= {"/chat", "/embeddings", "/jobs"}
        assert client.get("/ui/", headers=bearer(secrets["user"])).headers["location"] == "/"


def _key_id(url: str, name: str) -> str:
    from services.storage.tables import ApiKey

    with session_scope(url) as session:
        return session.query(ApiKey).filter_by(name=name).one().id


def test_leases_ask_the_store_once_per_lease_and_never_admit_more_than_the_limit():
    import asyncio

    from services.ingress.auth import SharedRateLimiter

    store = StoreHandle()
    replicas = [SharedRateLimiter(store, lease_s=1.0) for _ in range(3)]

    async def burst() -> int:
        return sum([await replicas[i % 3].acquire("busy", 600) == 0.0 for i in range(900)])

    allowed = asyncio.run(burst())
    # 600/min: a burst of at most 600 in total (plus what refills while it runs), leases of 10 tokens each
    assert 600 <= allowed <= 610 and store.calls <= allowed // 10 + 3 + 900 - allowed, (allowed, store.calls)


def test_requests_that_miss_the_lease_together_keep_every_leased_token():
    """Requests arriving together all miss the lease and each lease a second's worth while the others' calls are in
    flight; the tokens they bring back add up, so bursts well within the limit are never refused."""
    import asyncio

    from services.ingress.auth import SharedRateLimiter

    limiter = SharedRateLimiter(StoreHandle(), lease_s=1.0)

    async def bursts() -> list[float]:
        waits = []
        for _ in range(4):  # 4 x 32 at once against 600/min: 128 of the 600 tokens are needed
            waits += await asyncio.gather(*(limiter.acquire("burst", 600) for _ in range(32)))
        return waits

    assert asyncio.run(bursts()) == [0.0] * 128

"""The front door: the api application at 2 replicas and the raydio-ui application (configs/serve/test.yaml).

Requests reach both api replicas, a key's rate limit holds in total, a revoked key stops on every replica, a replica
killed with SIGKILL is routed around, the UI application takes the same credentials, four chat users share the
chat deployment, and a full UI queue is refused at once. Timings are printed (``MEASURED ...``, run with ``-s``),
never asserted: the numbers go to docs/operations.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client import Client

API_PREFIX = "SERVE_REPLICA::raydio#ingress#"
UI_PREFIX = "SERVE_REPLICA::raydio-ui#ui#"
KEY_CACHE_S = 5.0  # configs/serve/test.yaml keeps the default ingress.auth.key_cache_s
PROMPT = "Write a long story about a cat who learns to sail across the sea."


def measured(what: str, **numbers) -> None:
    print(f"\nMEASURED {what}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()))


def alive_api_replicas() -> dict[str, int]:
    """Actor name -> PID of the api application's live ingress replicas, from Ray's state: the state API
    (ray.util.state.list_actors) where its server runs, else the GCS actor table it reads from (the test cluster
    starts without the dashboard that hosts the state API server)."""
    import ray

    try:
        from ray.util.state import list_actors

        actors = {a.name: a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, timeout=30)
                  if (a.name or "").startswith(API_PREFIX)}
        if actors:
            return actors
    except Exception:  # noqa: BLE001 - no state API server: read the table directly
        pass
    return {a["Name"]: a["Pid"] for a in ray._private.state.actors().values()
            if a["State"] == "ALIVE" and (a["Name"] or "").startswith(API_PREFIX)}


def new_key(http, name: str, limit: int | None = None) -> dict:
    response = http.post("/v1/keys", json={"name": name, "scopes": ["inference"], "rate_limit_per_minute": limit})
    assert response.status_code == 201, response.text
    return response.json()


def test_requests_reach_both_api_replicas(http, stack):
    replicas = set()
    with ThreadPoolExecutor(8) as pool:
        for response in pool.map(lambda _: http.get("/v1/models"), range(40)):
            assert response.status_code == 200
            replicas.add(response.headers["X-Raydio-Replica"])
    assert replicas == set(alive_api_replicas()) and len(replicas) == 2, replicas


def test_a_keys_rate_limit_holds_in_total_across_the_replicas(http, base_url):
    limit = 20
    key = new_key(http, "front-door-limited", limit)
    headers = {"Authorization": f"Bearer {key['key']}"}
    started = time.monotonic()
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.get("/v1/models"), range(3 * limit)))
    elapsed = time.monotonic() - started
    allowed = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(allowed) + len(refused) == len(answers)
    refill = int(elapsed * limit / 60) + 1  # the bucket refills at limit/60 per second while the burst runs
    # one limit: per-replica buckets would have let up to 2 x limit through
    assert limit <= len(allowed) <= limit + refill, (len(allowed), elapsed)
    assert len({a.headers["X-Raydio-Replica"] for a in answers}) == 2
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    measured("rate limit across 2 api replicas", limit=limit, sent=len(answers), allowed=len(allowed), seconds=elapsed)


def test_a_revoked_key_stops_on_every_replica_within_key_cache_s(http, base_url):
    key = new_key(http, "front-door-revoked")
    headers = {"Authorization": f"Bearer {key['key']}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        seen = set()
        for _ in range(60):  # warm both replicas' key caches
            response = client.get("/v1/models")
            assert response.status_code == 200
            seen.add(response.headers["X-Raydio-Replica"])
            if len(seen) == 2:
                break
        assert len(seen) == 2
        assert http.delete(f"/v1/keys/{key['id']}").status_code == 204
        time.sleep(KEY_CACHE_S + 0.5)
        answers = [client.get("/v1/models") for _ in range(20)]
    assert {a.status_code for a in answers} == {401}
    assert len({a.headers["X-Raydio-Replica"] for a in answers}) == 2


def test_the_ui_application_takes_the_same_credentials(http, base_url, admin_key, auth_headers):
    index = http.get("/", headers={"Accept": "application/json"}).json()
    assert {u["path"] for u in index["uis"]} >= {"/ui/chat/", "/ui/embeddings/", "/ui/jobs/"}
    with httpx.Client(base_url=base_url, timeout=60, follow_redirects=False) as client:
        anonymous = client.get("/ui/chat/", headers={"Accept": "text/html"})
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=%2Fui%2Fchat%2F"
        assert anonymous.headers["X-Raydio-Replica"].startswith(UI_PREFIX)
        by_key = client.get("/ui/chat/config", headers=auth_headers)
        assert by_key.status_code == 200 and by_key.headers["X-Raydio-Replica"].startswith(UI_PREFIX)
        token = client.post("/v1/auth/token", headers=auth_headers).json()["access_token"]
        assert client.get("/ui/chat/config", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        login = client.post("/login", data={"api_key": admin_key, "next": "/ui/chat/"})  # the api application
        assert login.status_code == 303 and login.headers["X-Raydio-Replica"].startswith(API_PREFIX)
        page = client.get("/ui/chat/", headers={"Accept": "text/html"}, cookies={"raydio_session": login.cookies["raydio_session"]})
        assert page.status_code == 200 and "gradio" in page.text.lower()


def _chat(base_url: str, auth_headers: dict, max_tokens: int = 48) -> tuple[str, float]:
    client = Client(f"{base_url}/ui/chat/", verbose=False, headers=auth_headers)
    started = time.monotonic()
    answer, _ = client.predict(PROMPT, max_tokens, 0.0, {}, api_name="/chat")
    return answer, time.monotonic() - started


def test_four_concurrent_chat_users(base_url, auth_headers):
    _chat(base_url, auth_headers, 4)  # warm up
    answer, alone_s = _chat(base_url, auth_headers)
    assert answer
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _chat(base_url, auth_headers), range(4)))
    last_s = time.monotonic() - started
    assert all(text for text, _ in results)
    measured("four chat users through gradio_client", alone_s=alone_s, last_of_four_s=last_s, ratio=last_s / alone_s,
             each=" ".join(f"{s:.1f}" for _, s in sorted(results, key=lambda r: r[1])))


def test_a_full_ui_queue_is_refused_at_once_with_a_readable_error(base_url, auth_headers):
    """The chat page runs 2 generations at once (the chat deployment's max_ongoing_requests) and lets 2 x
    queue_per_slot wait (test.yaml: ui.queue_per_slot 2, so 4); more are refused when they join."""
    client = Client(f"{base_url}/ui/chat/", verbose=False, headers=auth_headers)
    jobs = [client.submit(PROMPT, 64, 0.0, {}, api_name="/chat") for _ in range(12)]
    refused, answered = [], 0
    for job in jobs:
        try:
            job.result(timeout=600)
            answered += 1
        except Exception as exc:  # noqa: BLE001 - gradio_client's QueueError, or an AppError carrying it
            refused.append(exc)
    assert refused and answered >= 2, (answered, refused)
    assert all("queue is full" in str(exc).lower() for exc in refused), refused
    # What a browser gets: the join itself is answered 503 with the reason, while the queue is full. Fill it again
    # and join until the queue refuses (each accepted join takes a place itself).
    fills = [client.submit(PROMPT, 64, 0.0, {}, api_name="/chat") for _ in range(8)]
    with httpx.Client(base_url=base_url, headers=auth_headers, timeout=60) as raw:
        for attempt in range(30):
            join = raw.post("/ui/chat/gradio_api/queue/join", json={
                "data": [PROMPT, 8, 0.0, {}, None, None], "fn_index": _chat_fn_index(client),
                "session_hash": f"full-{attempt}", "event_data": None})
            if join.status_code != 200:
                break
            time.sleep(0.2)
    for job in fills:
        try:
            job.result(timeout=600)
        except Exception:  # noqa: BLE001 - refused ones, as above
            pass
    assert join.status_code == 503 and "Queue is full" in join.json()["detail"], join.text
    measured("full UI queue", refused=len(refused), answered=answered)


def _chat_fn_index(client: Client) -> int:
    return next(dep.get("id", i) for i, dep in enumerate(client.config["dependencies"]) if dep.get("api_name") == "chat")


@pytest.mark.kills
def test_a_replica_killed_with_sigkill_is_routed_around(base_url):
    replicas = alive_api_replicas()
    assert len(replicas) == 2, replicas
    victim, pid = sorted(replicas.items())[0]
    log: list[tuple[float, float, bool, str]] = []  # (start, end, ok, replica or error)
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    response = client.get("/health/live")
                    log.append((start, time.monotonic(), response.status_code == 200,
                                response.headers.get("X-Raydio-Replica", str(response.status_code))))
                except httpx.HTTPError as exc:
                    log.append((start, time.monotonic(), False, type(exc).__name__))
                time.sleep(0.02)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        deadline = killed_at + 180
        while time.monotonic() < deadline:  # until Serve has replaced the replica
            now = alive_api_replicas()
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.5)
        replaced_at = time.monotonic()
        assert replaced_at < deadline, "Serve did not replace the killed replica"
        time.sleep(3.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    after = [entry for entry in log if entry[0] >= killed_at]
    failed = [entry for entry in after if not entry[2]]
    window_s = max((end for _, end, ok, _ in failed), default=killed_at) - killed_at
    last_failure = killed_at + window_s
    # Serve routed around the dead replica before its replacement was up: requests succeeded on the survivor.
    survived = [e for e in after if e[2] and last_failure < e[0] < replaced_at]
    assert survived and all(e[3] != victim for e in survived)
    assert all(ok for start, _, ok, _ in after if start > last_failure)
    tail = [e for e in after if e[0] > replaced_at]
    assert tail and all(ok for _, _, ok, _ in tail)
    measured("SIGKILL of one of 2 api replicas", requests=len(after), failed=len(failed), failing_window_s=window_s,
             replacement_up_s=replaced_at - killed_at, errors=sorted({e[3] for e in failed}))



def test_the_rate_limit_store_answers_and_what_it_costs(app_handle):
    """The store decides like the buckets it holds; the time per check (a handle round trip from this process, as an
    ingress replica makes one per authenticated request) is printed for docs/operations.md."""
    import asyncio
    import statistics

    from services.core.ratelimit import TokenBuckets

    store = app_handle("ratelimit")
    assert store.take.remote("bench-exhaust", 2).result() == 0.0
    assert store.take.remote("bench-exhaust", 2).result() == 0.0
    assert store.take.remote("bench-exhaust", 2).result() > 0  # the third within a minute waits
    assert store.lease.remote("bench-lease", 60, 10).result() == (10, 0.0)

    async def sequential(n: int) -> list[float]:
        handle = app_handle("ratelimit")
        times = []
        for i in range(n):
            start = time.perf_counter()
            await handle.take.remote(f"bench-{i % 50}", 1_000_000)
            times.append(time.perf_counter() - start)
        return times

    async def concurrent(n: int, c: int) -> float:
        handle = app_handle("ratelimit")
        start = time.perf_counter()

        async def worker(w: int) -> None:
            for i in range(n // c):
                await handle.take.remote(f"bench-{w}-{i % 10}", 1_000_000)

        await asyncio.gather(*(worker(w) for w in range(c)))
        return n / (time.perf_counter() - start)

    async def leased(n: int, c: int, limit: int) -> tuple[float, int]:
        from services.ingress.auth import SharedRateLimiter

        limiter = SharedRateLimiter(app_handle("ratelimit"))
        start = time.perf_counter()

        async def worker() -> None:
            for _ in range(n // c):
                await limiter.acquire(f"bench-leased-{limit}", limit)

        await asyncio.gather(*(worker() for _ in range(c)))
        return n / (time.perf_counter() - start), limiter.store_calls

    times = asyncio.run(sequential(500))
    leased_rate, leased_calls = asyncio.run(leased(3200, 16, 6_000_000))
    rate = asyncio.run(concurrent(1600, 16))
    local = TokenBuckets()
    start = time.perf_counter()
    for i in range(100_000):
        local.take(f"k{i % 50}", 1_000_000)
    local_us = (time.perf_counter() - start) / 100_000 * 1e6
    measured("rate-limit store per check", p50_ms=statistics.median(times) * 1e3,
             p90_ms=statistics.quantiles(times, n=10)[-1] * 1e3, checks_per_s_at_c16=rate, in_process_bucket_us=local_us,
             leased_acquires_per_s_at_c16=leased_rate, leased_store_calls_per_3200=leased_calls)

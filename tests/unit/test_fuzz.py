"""Schemathesis over the ingress app's own /openapi.json: every operation, authenticated with a real key.

The app is the real one (routes, auth middleware, body limit, error handlers, real models through LocalHandle);
only the Ray transport is replaced. Each response must be no 5xx, use a status and content type the operation
documents, and match the documented schema. The bounded run (a few examples per operation, fixed seed) is part of
`make test`; `make fuzz` runs the same test with RAYDIO_FUZZ_EXAMPLES raised and writes reports/fuzz/.

Chat generation is slow on CPU, so generated chat requests have max_tokens capped at 4 (a valid cap stays valid).
"""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.config import AuthArgs, IngressArgs, LimitsArgs, McpArgs, Settings
from services.ingress.app import build_ingress_app
from services.ingress.oip.dataplane import MODEL_VERSION
from services.storage.db import migrate, session_scope
from services.storage.repositories import KeyRepository

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("RAYDIO_FUZZ_EXAMPLES", "4"))
SEED = int(os.environ.get("RAYDIO_FUZZ_SEED", "1337"))
REPORT_DIR = os.environ.get("RAYDIO_FUZZ_REPORT")  # set by `make fuzz`
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_CHAT_TOKENS = 4

# operation -> Counter of statuses, and every failure's description; written to the report at the end.
STATUSES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
FAILURES: list[dict] = []
STARTED = time.perf_counter()


@pytest.fixture(scope="module")
def fuzz_key(tmp_path_factory):
    global STARTED
    STARTED = time.perf_counter()
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-db')}/raydio.db"
    migrate(url)
    with session_scope(url) as session:
        secret = KeyRepository.create(session, "fuzzer", ["admin", "inference"]).secret
    yield url, secret
    _write_report()


@pytest.fixture
def fuzz_schema(core, fuzz_key):
    """A fresh app per test: schemathesis' pytest plugin ends the app's lifespan (MCP's session manager, which
    runs once per instance) when each test ends."""
    url, secret = fuzz_key
    settings_ = Settings(database_url=url, jwt_secret="unit-test-secret-" + "x" * 32)
    limits = LimitsArgs(max_embedding_inputs=8, max_tensor_rows=4, max_completion_tokens=64, max_body_bytes=64 * 1024)
    # Auth ON (a real key) with a rate limit the fuzzer never reaches: 429 is tested in test_auth.py.
    args = IngressArgs(limits=limits, mount_ui=False, auth=AuthArgs(rate_limit_per_minute=1_000_000),
                       mcp=McpArgs(allowed_hosts=("testserver",)))
    app = build_ingress_app(core, args, settings_)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {secret}"})
    schema.secret = secret
    return schema


def _cap_chat(case) -> None:
    body = case.body
    if case.path == "/v1/chat/completions" and isinstance(body, dict):
        tokens = body.get("max_tokens")
        if tokens is None or (isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > MAX_CHAT_TOKENS):
            body["max_tokens"] = MAX_CHAT_TOKENS


def _known_path_parameters(path: str) -> dict[str, str]:
    """Path parameters naming things that exist: random ones only ever find a 404."""
    known = {}
    if path.startswith("/v2/models/{name}"):
        known["name"] = "digits"
    elif path == "/v1/models/{name}":
        known["name"] = "embedder"
    if "{version}" in path:
        known["version"] = MODEL_VERSION
    return known


def _fuzz_operation(operation, mode: GenerationMode, secret: str) -> None:
    """Up to EXAMPLES cases of one operation; every check failure is recorded, the first one per case."""

    strategy = operation.as_strategy(generation_mode=mode)
    known = _known_path_parameters(operation.path)
    if known:  # half the cases reach a real model instead of a random name's 404
        strategy = strategy | operation.as_strategy(generation_mode=mode, path_parameters=known)

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @seed(SEED)
    def run(case):
        _cap_chat(case)
        label = f"{case.method} {case.path}"
        started = time.perf_counter()
        try:
            response = case.call(headers={"Authorization": f"Bearer {secret}"})
        except Exception as exc:  # noqa: BLE001 - Starlette re-raises after its 500; in-process that surfaces here
            STATUSES[label][500] += 1
            FAILURES.append({"operation": label, "mode": mode.value, "status": 500, "failure": _describe(exc),
                             "seconds": round(time.perf_counter() - started, 3), "request": case.as_curl_command()[:1000]})
            return
        STATUSES[label][response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup; keep going, report all
            FAILURES.append({"operation": label, "mode": mode.value, "status": response.status_code,
                             "seconds": round(time.perf_counter() - started, 3), "failure": _describe(exc),
                             "request": case.as_curl_command()[:1000]})

    try:
        run()
    except Unsatisfiable:  # negative mode, an operation with no inputs to break (GET /health/live, say)
        assert mode is GenerationMode.NEGATIVE, operation.label


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_keeps_its_documented_contract(fuzz_schema, mode):
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 30, [op.label for op in operations]
    before = len(FAILURES)
    for operation in operations:
        _fuzz_operation(operation, mode, fuzz_schema.secret)
    failures = FAILURES[before:]
    assert not failures, f"{len(failures)} failed checks:\n" + "\n".join(
        f"{f['operation']} -> {f['status']}: {f['failure']}" for f in failures[:20])


def _describe(exc: BaseException) -> str:
    parts = getattr(exc, "exceptions", None) or [exc]
    return "; ".join(" ".join(str(part).split())[:300] for part in parts)


def _write_report() -> None:
    total = sum(sum(c.values()) for c in STATUSES.values())
    server_errors = sum(n for c in STATUSES.values() for status, n in c.items() if status >= 500)
    summary = {"examples_per_operation_and_mode": EXAMPLES, "seed": SEED, "operations": len(STATUSES), "requests": total,
               "server_errors": server_errors, "failures": len(FAILURES),
               "statuses": {op: dict(sorted(c.items())) for op, c in sorted(STATUSES.items())}}
    headline = (f"fuzz: {len(STATUSES)} operations, {total} requests, {server_errors} 5xx, {len(FAILURES)} failed checks "
                f"(up to {EXAMPLES} examples per operation and mode, seed {SEED}, {time.perf_counter() - STARTED:.0f} s)")
    print("\n" + headline)
    if REPORT_DIR:
        out = Path(REPORT_DIR)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.txt").write_text(headline + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        (out / "failures.json").write_text(json.dumps(FAILURES, indent=2))
        lines = ["| operation | requests | statuses |", "|---|---:|---|"]
        lines += [f"| `{op}` | {sum(c.values())} | {', '.join(f'{s}: {n}' for s, n in sorted(c.items()))} |"
                  for op, c in sorted(STATUSES.items())]
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        print(f"fuzz: report in {out}/summary.md, summary.json, failures.json")


def test_openapi_documents_the_errors_every_layer_can_answer(fuzz_schema):
    """Regression: POST /v1/jobs answered an undocumented 413; operations advertised a 422 the app never sends."""
    for path, operations in fuzz_schema.raw_schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert "422" not in codes and "500" in codes, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= codes, (method, path)
            if not path.startswith(("/health/", "/v2/health/")):
                assert {"401", "403", "429"} <= codes, (method, path)
    jobs = fuzz_schema.raw_schema["paths"]["/v1/jobs"]["post"]["responses"]["413"]
    assert jobs["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    infer = fuzz_schema.raw_schema["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["401"]
    assert infer["content"]["application/json"]["schema"]["$ref"].endswith("/V2Error")

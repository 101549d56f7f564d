"""The OpenAPI document states what the app-wide layers answer, not only what each route declares.

Auth (401/403/429), the body limit (413) and the catch-all handler (500) sit outside every router, and request
validation answers 400, never FastAPI's default 422. Schemathesis found routes whose documents left these out
(a 413 on ``POST /v1/jobs``), so they are added here once, for every operation, in the shape of its error bodies.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.ingress.auth import is_open
from services.ingress.errors import V2_PREFIX

_DESCRIPTIONS = {
    "400": "Invalid input: wrong types, missing or unknown fields, or a value out of range.",
    "401": "Missing, invalid, expired or revoked credentials.",
    "403": "The key lacks the scope this route needs.",
    "413": "Request body larger than the configured limit.",
    "429": "The key's rate limit is exhausted; see Retry-After.",
    "500": "Unexpected failure. It is logged; the body reveals nothing internal.",
}


def _error(path: str, code: str) -> dict[str, Any]:
    model = "V2Error" if path == V2_PREFIX or path.startswith(V2_PREFIX + "/") else "ErrorResponse"
    return {"description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}


def complete_responses(document: dict[str, Any]) -> dict[str, Any]:
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            wanted = ["500"]
            if responses.pop("422", None) is not None or operation.get("parameters") or "requestBody" in operation:
                wanted.append("400")
            if "requestBody" in operation:
                wanted.append("413")
            if not is_open(path):
                wanted += ["401", "403", "429"]
            for code in wanted:
                responses.setdefault(code, _error(path, code))
    # FastAPI's 422 body schemas, now referenced by nothing (validation errors are 400s in this app's error shape).
    schemas = document.get("components", {}).get("schemas", {})
    if "#/components/schemas/HTTPValidationError" not in json.dumps(document.get("paths", {})):
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
    return document


def document_app_wide_responses(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_responses(get_openapi(
                title=app.title, version=app.version, openapi_version=app.openapi_version, summary=app.summary,
                description=app.description, routes=app.routes, tags=app.openapi_tags, servers=app.servers))
        return app.openapi_schema

    app.openapi = openapi

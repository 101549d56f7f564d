"""Map domain errors to HTTP. Two body shapes, chosen by path: the Open Inference Protocol's
``{"error": "..."}`` under ``/v2`` (what tritonclient and KServe clients parse), OpenAI's
``{"error": {"message", "type", "param", "code"}}`` everywhere else."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from services.errors import (
    BadGateway,
    Conflict,
    Forbidden,
    InputTooLarge,
    InvalidInput,
    ModelNotFound,
    ModelTimeout,
    ModelUnavailable,
    NotFound,
    RaydioError,
)

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[RaydioError], int, str]] = [
    (InputTooLarge, 400, "invalid_request_error"),
    (InvalidInput, 400, "invalid_request_error"),
    (ModelNotFound, 404, "invalid_request_error"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (Forbidden, 403, "permission_error"),
    (ModelUnavailable, 503, "service_unavailable"),
    (ModelTimeout, 504, "timeout"),
    (BadGateway, 502, "bad_gateway"),
]


V2_PREFIX = "/v2"


def is_v2(scope: Scope) -> bool:
    """Whether the request is on the Open Inference Protocol's routes (path relative to any root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body_for(scope: Scope, message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": message} if is_v2(scope) else error_body(message, type_, code, param)


def error_response(scope: Scope, status: int, message: str, type_: str, code: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body_for(scope, message, type_, code, param), status_code=status, headers=headers)


def response_for(scope: Scope, exc: RaydioError) -> JSONResponse:
    for error_type, status, type_ in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ModelUnavailable) else None
            return error_response(scope, status, exc.message, type_, exc.code, exc.param, headers)
    return error_response(scope, 500, exc.message, "server_error", exc.code, exc.param)


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    problems, first_param = [], None
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        first_param = first_param or where
        message = "unknown field; remove it" if item.get("type") == "extra_forbidden" else item.get("msg", "invalid")
        problems.append(f"{where}: {message}")
    return "Invalid request: " + "; ".join(problems), first_param


# FastAPI's words when a body cannot be read at all (invalid UTF-8, JSON nested past the parser's recursion limit).
_CLEARER_DETAIL = {
    "There was an error parsing the body": "The request body could not be parsed: it is not valid UTF-8 JSON "
                                           "(or form data), or it nests too deeply.",
}
_CODE_BY_STATUS = {413: "payload_too_large", 431: "headers_too_large"}


def add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(RaydioError)
    async def _domain(request: Request, exc: RaydioError) -> JSONResponse:
        return response_for(request.scope, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_error(exc)
        return error_response(request.scope, 400, message, "invalid_request_error", "invalid_request", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found" if exc.status_code == 404 else "invalid_request_error"
        detail = _CLEARER_DETAIL.get(str(exc.detail), str(exc.detail))
        return error_response(request.scope, exc.status_code, detail, type_, _CODE_BY_STATUS.get(exc.status_code),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request.scope, 500, "Internal server error. The failure was logged.", "server_error")

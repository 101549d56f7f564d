"""Map domain errors to HTTP: one body shape (OpenAI's ``{"error": {...}}``) for every 4xx/5xx."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import (
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
    (ModelUnavailable, 503, "service_unavailable"),
    (ModelTimeout, 504, "timeout"),
]


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code, param), status_code=status, headers=headers)


def response_for(exc: RaydioError) -> JSONResponse:
    for error_type, status, type_ in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ModelUnavailable) else None
            return error_response(status, exc.message, type_, exc.code, exc.param, headers)
    return error_response(500, exc.message, "server_error", exc.code, exc.param)


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    problems, first_param = [], None
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        first_param = first_param or where
        message = "unknown field; remove it" if item.get("type") == "extra_forbidden" else item.get("msg", "invalid")
        problems.append(f"{where}: {message}")
    return "Invalid request: " + "; ".join(problems), first_param


def add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(RaydioError)
    async def _domain(_: Request, exc: RaydioError) -> JSONResponse:
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_error(exc)
        return error_response(400, message, "invalid_request_error", "invalid_request", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), type_, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal server error. The failure was logged.", "server_error")

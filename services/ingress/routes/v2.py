"""Open Inference Protocol (KServe V2) over REST: the HTTP framing only; ``services.ingress.oip`` does the rest.

Errors on these routes are ``{"error": "..."}`` (see ``services.ingress.errors``), which is what
tritonclient and KServe's clients read.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException

from services.errors import InvalidInput
from services.ingress.dependencies import CoreDep, LimitsDep
from services.ingress.oip.dataplane import DataPlane, InferenceResult
from services.ingress.oip.types import (
    V2_ERROR_RESPONSES,
    V2_SERVER_ERROR,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    V2Error,
)

# The health probes are open (no credentials) and touch no model: they only document the 500.
router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], responses=V2_SERVER_ERROR)

HEADER_LENGTH = "Inference-Header-Content-Length"


def get_dataplane(core: CoreDep) -> DataPlane:
    return DataPlane(core)


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]

_NOT_READY = {503: {"model": V2Error, "description": "Not ready: a model deployment did not answer."}}
_MODEL_ROUTE = {**V2_ERROR_RESPONSES, **_NOT_READY}


@router.get("", response_model=ServerMetadata, responses={k: V2_ERROR_RESPONSES[k] for k in (401, 403, 429)},
            summary="Server metadata")
async def server_metadata(dataplane: DataPlaneDep) -> dict:
    """Name, version and the protocol extensions this server supports."""
    return dataplane.server_metadata()


@router.get("/health/live", response_model=ServerLive, summary="Server liveness")
async def server_live() -> dict:
    """The ingress answers. Does not look at the models."""
    return {"live": True}


@router.get("/health/ready", response_model=ServerReady, responses=_NOT_READY, summary="Server readiness")
async def server_ready(dataplane: DataPlaneDep) -> JSONResponse:
    """200 when every model deployment answers, 503 otherwise."""
    statuses = await dataplane.server_ready()
    failing = [f"{s.name}: {s.error}" for s in statuses if not s.ready]
    if failing:
        return JSONResponse({"ready": False, "error": "Not ready. " + "; ".join(failing)}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/models/{name}", response_model=ModelMetadata, responses=V2_ERROR_RESPONSES, summary="Model metadata",
            operation_id="v2_model_metadata")
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=V2_ERROR_RESPONSES,
            summary="Model metadata (version)", operation_id="v2_model_version_metadata")
async def model_metadata(name: str, dataplane: DataPlaneDep, version: str | None = None) -> dict:
    """Inputs and outputs with datatypes and shapes (-1: variable), and the versions served."""
    return await dataplane.model_metadata(name, version)


@router.get("/models/{name}/ready", response_model=ModelReady, responses=_MODEL_ROUTE, summary="Model readiness",
            operation_id="v2_model_ready")
@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=_MODEL_ROUTE,
            summary="Model readiness (version)", operation_id="v2_model_version_ready")
async def model_ready(name: str, dataplane: DataPlaneDep, version: str | None = None) -> JSONResponse:
    """200 when the model's deployment answers, 503 otherwise."""
    status = await dataplane.model_ready(name, version)
    if not status.ready:
        return JSONResponse({"name": name, "ready": False, "error": f"Model {name!r} is not ready: {status.error}"},
                            status_code=503)
    return JSONResponse({"name": name, "ready": True})


_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": InferenceRequest.model_json_schema()},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": f"Binary tensor extension: the JSON request ({HEADER_LENGTH} bytes long) followed by each "
                           "input's binary data, in input order, sized by its parameters.binary_data_size.",
        },
    },
}
_INFER_RESPONSES = {
    **V2_ERROR_RESPONSES,
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": f"JSON, or with binary outputs: the JSON response ({HEADER_LENGTH} bytes) followed by their "
                         "data. Compressed when Accept-Encoding asks for gzip or deflate."},
    415: {"model": V2Error, "description": "Content-Encoding other than gzip or deflate."},
}


@router.post("/models/{name}/infer", response_model=InferenceResponse, responses=_INFER_RESPONSES,
             openapi_extra={"requestBody": _INFER_BODY}, summary="Inference", operation_id="v2_infer")
@router.post("/models/{name}/versions/{version}/infer", response_model=InferenceResponse, responses=_INFER_RESPONSES,
             openapi_extra={"requestBody": _INFER_BODY}, summary="Inference (version)", operation_id="v2_version_infer")
async def infer(name: str, request: Request, dataplane: DataPlaneDep, limits: LimitsDep,
                version: str | None = None) -> Response:
    """Run the model on JSON tensors or binary tensor data; outputs come back as JSON or binary, as asked."""
    dataplane.model(name, version)  # 404 before reading the body
    body = _decompress(await request.body(), request.headers.get("content-encoding"), limits.max_body_bytes)
    header, tail = _split_header(body, request.headers.get(HEADER_LENGTH))
    try:
        inference_request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidInput("Invalid inference request: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())) from None
    result = await dataplane.infer(name, inference_request, tail, version)
    return _response(result, request.headers.get("accept-encoding", ""))


def _decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise HTTPException(415, f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none.")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"The body is not valid {encoding} data ({exc}).") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise HTTPException(413, f"The decompressed body exceeds the limit of {max_bytes} bytes.")
    return data


def _split_header(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise InvalidInput(f"{HEADER_LENGTH} must be a byte count no larger than the body ({len(body)} bytes); "
                           f"got {header_length!r}.")
    length = int(header_length)
    return body[:length], body[length:]


def _response(result: InferenceResult, accept_encoding: str) -> Response:
    document = to_json(result.document)  # Rust serializer: ~5x faster than json.dumps on float tensors
    headers = {}
    if result.binary:
        headers[HEADER_LENGTH] = str(len(document))
        body, media_type = b"".join([document, *result.binary]), "application/octet-stream"
    else:
        body, media_type = document, "application/json"
    # Level 1: float tensors barely compress (JSON halves, binary shrinks ~7%), so spend as little CPU as possible.
    accepted = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    if "gzip" in accepted:
        body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=1), "gzip"
    elif "deflate" in accepted:
        body, headers["Content-Encoding"] = zlib.compress(body, 1), "deflate"
    return Response(body, media_type=media_type, headers=headers)

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.ingress.dependencies import BackendsDep

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict:
    """The ingress process is up. Does not look at the models."""
    return {"status": "live"}


@router.get("/ready", responses={503: {"description": "At least one model deployment did not answer."}})
async def ready(backends: BackendsDep) -> JSONResponse:
    """Ready only when every model deployment (and the job runner) answers."""
    statuses = await backends.statuses(include_services=True)
    def entry(status) -> dict:
        return {"ready": status.ready, **({"error": status.error} if status.error else {})}

    body = {
        "status": "ready" if all(s.ready for s in statuses) else "not ready",
        "models": {s.name: entry(s) for s in statuses if s.name in backends.handles},
        **({"services": {s.name: entry(s) for s in statuses if s.name in backends.services}} if backends.services else {}),
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.ingress.dependencies import ClientDep
from services.ingress.schemas import SERVER_ERROR, Liveness, Readiness

router = APIRouter(prefix="/health", tags=["health"], responses=SERVER_ERROR)


@router.get("/live", response_model=Liveness)
async def live() -> dict:
    """The ingress process is up. Does not look at the models."""
    return {"status": "live"}


@router.get("/ready", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "At least one model deployment did not answer."}})
async def ready(client: ClientDep) -> JSONResponse:
    """Ready only when every model deployment (and the job runner) answers."""
    statuses = await client.statuses(include_services=True)
    def entry(status) -> dict:
        return {"ready": status.ready, **({"error": status.error} if status.error else {})}

    body = {
        "status": "ready" if all(s.ready for s in statuses) else "not ready",
        "models": {s.name: entry(s) for s in statuses if s.name in client.handles},
        **({"services": {s.name: entry(s) for s in statuses if s.name in client.services}} if client.services else {}),
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

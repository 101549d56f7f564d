"""Remote Gradio apps declared in configuration, called through their RemoteGradio deployment."""

from __future__ import annotations

from fastapi import APIRouter

from services.ingress.dependencies import ClientDep
from services.ingress.schemas import ERROR_RESPONSES, RemoteRequest, RemoteResponse

router = APIRouter(prefix="/v1/remote", tags=["remote"], responses={
    **{k: ERROR_RESPONSES[k] for k in (400, 404)},
    502: {"model": ERROR_RESPONSES[400]["model"], "description": "The remote Gradio app is down or failed; names it."},
})


@router.post("/{name}", response_model=RemoteResponse)
async def call_remote(name: str, body: RemoteRequest, client: ClientDep) -> RemoteResponse:
    """Call a configured remote Gradio app (`remotes` in the Serve config) with positional inputs."""
    return RemoteResponse(backend=name, output=await client.call_remote(name, body.inputs))

"""``/app``: a hand-written page (plain HTML, CSS and JavaScript, no build step) that uses only the public REST API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"app.css": "text/css", "app.js": "text/javascript"}

router = APIRouter(include_in_schema=False)


@router.get("/app")
async def page() -> FileResponse:
    return FileResponse(STATIC / "app.html", media_type="text/html")


@router.get("/app/static/{name}")
async def asset(name: str) -> FileResponse:
    from services.errors import NotFound

    if name not in ASSETS:  # a fixed list: no path from the URL ever reaches the file system
        raise NotFound(f"No asset {name!r}.")
    return FileResponse(STATIC / name, media_type=ASSETS[name])

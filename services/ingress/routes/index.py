"""``GET /``: what this service offers. HTML for a browser, JSON for a client that asks for it."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from services.core.catalogue import describe, faces
from services.ingress.dependencies import CatalogueDep, ClientDep
from services.ingress.schemas import AUTH_ERRORS, SERVER_ERROR

router = APIRouter(tags=["index"], responses={**AUTH_ERRORS, **SERVER_ERROR})


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if "application/json" not in accept:
        return False
    return "text/html" not in accept or accept.index("application/json") < accept.index("text/html")


@router.get("/", responses={200: {"content": {"text/html": {}, "application/json": {}}}})
async def index(request: Request, client: ClientDep, catalogue: CatalogueDep):
    """Every model with its status, every UI, and the API docs."""
    statuses = await client.statuses()
    remotes = await client.remote_statuses()
    body = {
        "service": "raydio",
        "models": [
            {"name": s.name, "kind": catalogue.get(s.name).kind, "ready": s.ready,
             "model_id": s.info.get("model_id") or catalogue.get(s.name).identity, "device": s.info.get("device"),
             "description": describe(catalogue.get(s.name)), "routes": faces(catalogue.get(s.name)),
             **({"error": s.error} if s.error else {})}
            for s in statuses
        ],
        "remotes": [{"name": r.name, "path": f"/v1/remote/{r.name}", "target": r.info.get("model_id"),
                     "description": r.info.get("description", "")} for r in remotes],
        "uis": [{"name": name, "path": f"/ui/{name}/", "description": text} for name, text in request.app.state.uis.items()],
        "app": "/app",
        "api": {"docs": "/docs", "openapi": "/openapi.json", "models": "/v1/models", "open_inference_protocol": "/v2",
                "mcp": "/mcp/", "health": "/health/ready"},
    }
    if _wants_json(request):
        return JSONResponse(body)
    return HTMLResponse(_render(body))


def _render(body: dict) -> str:
    models = "".join(
        f"<tr><td><code>{escape(m['name'])}</code></td><td>{escape(m['model_id'] or '-')}</td>"
        f"<td>{escape(m['kind'])}</td><td>{escape(m['device'] or '-')}</td><td class={'ok' if m['ready'] else 'bad'}>"
        f"{'ready' if m['ready'] else 'not ready'}</td><td>{escape(m['description'])}<br>"
        f"{' · '.join(f'<code>{escape(r)}</code>' for r in m['routes'])}</td></tr>"
        for m in body["models"]
    )
    uis = "".join(f"<li><a href='{u['path']}'>{escape(u['path'])}</a> — {escape(u['description'])}</li>" for u in body["uis"])
    api = "".join(f"<li><code>{escape(path)}</code> ({escape(name)})</li>" for name, path in body["api"].items())
    api += "".join(f"<li><code>{escape(r['path'])}</code> (remote Gradio: {escape(r['target'] or '?')})</li>"
                   for r in body["remotes"])
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>raydio</title>
<meta name=viewport content="width=device-width,initial-scale=1">
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}}
.ok{{color:#11772d;font-weight:600}}.bad{{color:#b3261e;font-weight:600}}code{{background:#f3f3f3;padding:0 .2rem}}</style>
</head><body><h1>raydio</h1><p>PyTorch models on Ray Serve. <a href="/docs">API docs</a> ·
<a href="/health/ready">readiness</a> · <a href="/app">the app</a></p>
<h2>Models</h2><table><tr><th>name</th><th>model</th><th>kind</th><th>device</th><th>status</th><th></th></tr>{models}</table>
<h2>UIs</h2><ul>{uis or '<li>none mounted</li>'}</ul><h2>REST</h2><ul>{api}</ul></body></html>"""

from __future__ import annotations

import json

import gradio as gr

from services.core.services import Core
from services.errors import RaydioError
from services.ingress.ui.context import owner

COLUMNS = ["id", "kind", "status", "done", "total", "created (UTC)", "error"]


def build_jobs_ui(core: Core) -> gr.Blocks:
    async def list_jobs(request: gr.Request) -> list[list]:
        """This key's recent jobs with live progress."""
        jobs = await core.jobs.list(owner(request), limit=30)
        return [[j["id"], j["kind"], j["status"], j["progress"]["done"], j["progress"]["total"],
                 (j["created_at"] or "")[:19].replace("T", " "), j["error"] or ""] for j in jobs]

    async def submit(kind: str, lines: str, request: gr.Request) -> tuple[str, list[list]]:
        """Submit a job: one input per line (for classify, one JSON 8x8 grid per line)."""
        items = [line.strip() for line in lines.splitlines() if line.strip()]
        if not items:
            raise gr.Error("Enter at least one input, one per line.")
        try:
            inputs = [json.loads(item) for item in items] if kind == "classify" else items
        except json.JSONDecodeError as exc:
            raise gr.Error(f"Line is not a JSON 8x8 grid: {exc}") from exc
        try:  # the same validation and limits as POST /v1/jobs and MCP's submit_job
            job = await core.jobs.submit(owner(request), kind, inputs)
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        return f"Submitted job `{job['id']}` with {job['progress']['total']} inputs.", await list_jobs(request)

    with gr.Blocks(title="raydio · jobs") as demo:
        gr.Markdown("## Batch jobs\nDurable jobs run in the background and survive restarts. The table refreshes every 2 s.")
        with gr.Row():
            kind = gr.Dropdown(["embed", "complete", "classify"], value="embed", label="Kind")
            lines = gr.Textbox(label="Inputs, one per line", lines=4, scale=3)
        notice = gr.Markdown()
        gr.Button("Submit", variant="primary").click(submit, [kind, lines], [notice, table := gr.Dataframe(
            headers=COLUMNS, label="Your jobs", interactive=False)], api_name="submit",
            api_description="Submit a job; returns a notice and the refreshed job table.")
        timer = gr.Timer(2.0)
        timer.tick(list_jobs, None, table, api_name="list_jobs", api_description="This key's 30 most recent jobs with status and progress.",
                   show_progress="hidden")
        demo.load(list_jobs, None, table, api_visibility="private")
    return demo

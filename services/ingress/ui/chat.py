"""Streaming chat UI. Each browser keeps its session id (per agent) in localStorage; the history lives in the
database, so a reload shows it again. ``/ui/chat/?agent=NAME`` talks as a runtime-created agent."""

from __future__ import annotations

import gradio as gr

from services.core.chat import Sampling
from services.core.services import Core
from services.errors import RaydioError
from services.ingress.ui.context import model_choice, owner, queue_size


def _agent(request: gr.Request) -> str | None:
    """A browser names the agent in the page URL (?agent=NAME); gradio_client in an X-Raydio-Agent header."""
    return (request.query_params or {}).get("agent") or (request.headers or {}).get("x-raydio-agent") or None


def build_chat_ui(core: Core) -> gr.Blocks:
    sessions, limits = core.sessions, core.limits

    async def respond(message: str, history: list[dict], max_tokens: int, temperature: float, saved: dict,
                      model: str | None = None, request: gr.Request = None):
        """Answer `message`, continuing this browser's stored session; streams the growing answer."""
        owner_id, agent = owner(request), _agent(request)
        saved = dict(saved or {})
        answer = ""
        try:
            session_id = saved.get(agent or "")
            if session_id is None:
                session_id = (await sessions.create(owner_id, message[:80], agent))["id"]
                saved[agent or ""] = session_id
            turn = await core.chat.start(owner_id, [{"role": "user", "content": message}], model,
                                         Sampling(max_tokens=int(max_tokens), temperature=float(temperature)), session_id)
            async for chunk in turn.chunks():
                answer += chunk["text"]
                if chunk["text"]:
                    yield answer, saved
        except RaydioError as exc:
            if exc.param == "session_id":  # deleted elsewhere: start afresh next time
                saved.pop(agent or "", None)
            raise gr.Error(exc.message) from exc
        yield answer, saved

    async def restore(saved: dict, request: gr.Request):
        """Show the stored history of this browser's session (and the agent's name) after a reload."""
        agent = _agent(request)
        heading = f"## Chat with agent `{agent}`" if agent else "## Chat"
        session_id = (saved or {}).get(agent or "")
        if session_id is None:
            return heading, []
        try:
            stored = await sessions.get(owner(request), session_id)
        except RaydioError:
            return heading, []
        return heading, [{"role": m["role"], "content": m["content"]} for m in stored["messages"] if m["role"] != "system"]

    running, waiting = queue_size(core, "text-generation")
    with gr.Blocks(title="raydio · chat") as demo:
        heading = gr.Markdown("## Chat")
        gr.Markdown("A text-generation model of the catalogue, served by Ray Serve; answers stream token by token "
                    "and are kept in your session.")
        saved = gr.BrowserState({}, storage_key="raydio-chat-sessions")
        chatbot = gr.Chatbot(height=420, label="Conversation")
        gr.ChatInterface(
            respond,
            chatbot=chatbot,
            textbox=gr.Textbox(label="Message", placeholder="Ask something…", submit_btn=True),
            additional_inputs=[
                gr.Slider(1, limits.max_completion_tokens, value=min(128, limits.max_completion_tokens), step=1,
                          label="Max new tokens"),
                gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature"),
                saved,
                model_choice(core, "text-generation"),  # last, so clients that predate it keep their positions
            ],
            additional_outputs=[saved],
            examples=[["Give me three tips for a good night's sleep.", min(128, limits.max_completion_tokens), 0.7, {},
                       core.catalogue.default("text-generation")]],
            cache_examples=False,
            api_name="chat",
            concurrency_limit=running,
            api_description="Send a message; returns the assistant's reply (streamed) and the browser's session map. "
                            "The conversation continues the stored session.",
        )
        demo.load(restore, inputs=[saved], outputs=[heading, chatbot], api_visibility="private")
    # As many generations at once as the deployments batch; a bounded wait behind them, refused at once when full.
    return demo.queue(max_size=waiting)

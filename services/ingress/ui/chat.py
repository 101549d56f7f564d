"""Streaming chat UI. Each browser keeps its session id (per agent) in localStorage; the history lives in the
database, so a reload shows it again. ``/ui/chat/?agent=NAME`` talks as a runtime-created agent.

When the agent proposes an action that needs confirmation, Accept and Reject (with a reason) appear under the
conversation; what shows is derived from the stored session each time, so it survives a reload."""

from __future__ import annotations

import json

import gradio as gr

from services.core.chat import Sampling
from services.core.services import Core
from services.errors import Conflict, RaydioError
from services.ingress.ui.context import QUEUE_PER_SLOT, model_choice, owner, queue_size


def _agent(request: gr.Request) -> str | None:
    """A browser names the agent in the page URL (?agent=NAME); gradio_client in an X-Raydio-Agent header."""
    return (request.query_params or {}).get("agent") or (request.headers or {}).get("x-raydio-agent") or None


def build_chat_ui(core: Core, queue_per_slot: int = QUEUE_PER_SLOT) -> gr.Blocks:
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
            if turn.tool_calls:  # an action the agent proposed: it waits below for Accept or Reject
                answer = "\n\n".join(filter(None, [turn_text(turn), *(proposal(c.name, c.arguments) for c in turn.tool_calls)]))
        except Conflict as exc:  # an action waits in this session: the buttons below decide it
            raise gr.Error("An action waits for your decision: Accept or Reject it below, then send your message.") from exc
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
        return heading, shown(stored["messages"])

    async def pending_view(saved: dict, request: gr.Request):
        """Accept and Reject show only while the stored session waits for a decision."""
        session_id = (saved or {}).get(_agent(request) or "")
        action = None
        if session_id is not None:
            try:
                action = (await sessions.get(owner(request), session_id))["pending_action"]
            except RaydioError:
                action = None
        if action is None:
            return gr.update(visible=False), ""
        who = f"Agent `{action['proposed_by']}`" if action["proposed_by"] else "The agent"
        return gr.update(visible=True), (f"**{who} wants to run `{action['name']}`** with\n```json\n"
                                         f"{json.dumps(action['arguments'], indent=1)}\n```\nNothing runs until you accept.")

    async def decide(accept: bool, reason: str, saved: dict, request: gr.Request):
        session_id = (saved or {}).get(_agent(request) or "")
        if session_id is None:
            raise gr.Error("No session here.")
        try:
            if accept:
                await core.actions.accept(owner(request), session_id)
            else:
                await core.actions.reject(owner(request), session_id, (reason or "").strip() or "No reason given.")
            stored = await sessions.get(owner(request), session_id)
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        return shown(stored["messages"]), gr.update(visible=False), "", ""

    async def accept_action(reason: str, saved: dict, request: gr.Request):
        return await decide(True, reason, saved, request)

    async def reject_action(reason: str, saved: dict, request: gr.Request):
        return await decide(False, reason, saved, request)

    running, waiting = queue_size(core, "text-generation", queue_per_slot)
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
        with gr.Group(visible=False, elem_id="pending-action") as panel:
            pending = gr.Markdown(elem_id="pending-text")
            reason = gr.Textbox(label="Reason (sent to the agent when you reject)", elem_id="reject-reason")
            with gr.Row():
                accept = gr.Button("Accept", variant="primary", elem_id="accept-action")
                reject = gr.Button("Reject", variant="stop", elem_id="reject-action")
        # The page's buttons, not API endpoints: programs decide through REST or MCP (docs/agents.md).
        accept.click(accept_action, [reason, saved], [chatbot, panel, pending, reason], api_visibility="private")
        reject.click(reject_action, [reason, saved], [chatbot, panel, pending, reason], api_visibility="private")
        # after every answer (and after a reload): the stored session decides whether the buttons show
        chatbot.change(pending_view, [saved], [panel, pending], trigger_mode="always_last", api_visibility="private")
        demo.load(restore, inputs=[saved], outputs=[heading, chatbot], api_visibility="private").then(
            pending_view, [saved], [panel, pending], api_visibility="private")
    # As many generations at once as the deployments batch; a bounded wait behind them, refused at once when full.
    return demo.queue(max_size=waiting)


def proposal(name: str, arguments: dict) -> str:
    return f"I would like to run `{name}` with `{json.dumps(arguments)}`. Accept or reject it below."


def turn_text(turn) -> str:
    return "".join(turn.text).strip()


def shown(messages: list[dict]) -> list[dict]:
    """The stored history as the chatbot shows it: proposals and outcomes in words, system prompts hidden."""
    bubbles = []
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            bubbles.append({"role": "assistant", "content": f"⚙ {m['content']}"})
            continue
        calls = [proposal(c["function"]["name"], json.loads(c["function"]["arguments"] or "{}")) for c in m.get("tool_calls") or ()]
        content = "\n\n".join(filter(None, [m["content"] or "", *calls]))
        bubbles.append({"role": m["role"], "content": content})
    return bubbles

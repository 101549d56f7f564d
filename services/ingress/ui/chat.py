"""Streaming chat UI. Each browser keeps its session id (per agent) in localStorage; the history lives in the
database, so a reload shows it again. ``/ui/chat/?agent=NAME`` talks as a runtime-created agent."""

from __future__ import annotations

import gradio as gr

from services.errors import RaydioError
from services.ingress.backends import ModelBackends
from services.ingress.sessions import SessionStore


def _owner(request: gr.Request) -> str:
    principal = getattr(request.request.state, "principal", None) if request.request else None
    if principal is None:
        raise gr.Error("Not logged in.")
    return principal.key_id


def _agent(request: gr.Request) -> str | None:
    return (request.query_params or {}).get("agent") or None


def build_chat_ui(backends: ModelBackends, sessions: SessionStore) -> gr.Blocks:
    async def respond(message: str, history: list[dict], max_tokens: int, temperature: float, saved: dict,
                      request: gr.Request):
        """Answer `message`, continuing this browser's stored session; streams the growing answer."""
        owner, agent = _owner(request), _agent(request)
        saved = dict(saved or {})
        try:
            session_id = saved.get(agent or "")
            if session_id is None:
                session_id = (await sessions.create(owner, message[:80], agent))["id"]
                saved[agent or ""] = session_id
            new = [{"role": "user", "content": message}]
            conversation = await sessions.conversation(owner, session_id, new)
            params = {"max_tokens": int(max_tokens), "temperature": float(temperature), "top_p": 0.95, "stop": (),
                      "seed": None}
            answer, first, completion_tokens = "", None, 0
            async for chunk in backends.chat(conversation.messages, params):
                if first is None:
                    first = chunk
                    continue
                answer += chunk["text"]
                completion_tokens = chunk["completion_tokens"] or completion_tokens
                if chunk["text"]:
                    yield answer, saved
            await sessions.append(owner, session_id, [*new, {"role": "assistant", "content": answer}],
                                  [*first["message_tokens"][conversation.new_from:], completion_tokens])
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
            stored = await sessions.get(_owner(request), session_id)
        except RaydioError:
            return heading, []
        return heading, [{"role": m["role"], "content": m["content"]} for m in stored["messages"] if m["role"] != "system"]

    with gr.Blocks(title="raydio · chat") as demo:
        heading = gr.Markdown("## Chat")
        gr.Markdown("SmolLM2-135M-Instruct served by Ray Serve; answers stream token by token and are kept in "
                    "your session.")
        saved = gr.BrowserState({}, storage_key="raydio-chat-sessions")
        chatbot = gr.Chatbot(height=420, label="Conversation")
        gr.ChatInterface(
            respond,
            chatbot=chatbot,
            additional_inputs=[
                gr.Slider(1, 512, value=128, step=1, label="Max new tokens"),
                gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature"),
                saved,
            ],
            additional_outputs=[saved],
            examples=[["Give me three tips for a good night's sleep.", 128, 0.7, {}]],
            cache_examples=False,
            api_name="chat",
            api_description="Send a message; returns the assistant's reply (streamed) and the browser's session map. "
                            "The conversation continues the stored session.",
        )
        demo.load(restore, inputs=[saved], outputs=[heading, chatbot], api_visibility="private")
    return demo

from __future__ import annotations

import gradio as gr

from services.errors import RaydioError
from services.ingress.backends import ModelBackends


def build_chat_ui(backends: ModelBackends) -> gr.Blocks:
    async def respond(message: str, history: list[dict], max_tokens: int, temperature: float):
        """Answer `message` given the chat `history`; streams the growing answer."""
        messages = [{"role": m["role"], "content": _text(m["content"])} for m in history]
        messages.append({"role": "user", "content": message})
        params = {"max_tokens": int(max_tokens), "temperature": float(temperature), "top_p": 0.95, "stop": (), "seed": None}
        answer = ""
        try:
            async for chunk in backends.chat(messages, params):
                answer += chunk.get("text", "")
                if chunk.get("text"):
                    yield answer
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        yield answer

    with gr.Blocks(title="raydio · chat") as demo:
        gr.Markdown("## Chat\nSmolLM2-135M-Instruct served by Ray Serve; answers stream token by token.")
        gr.ChatInterface(
            respond,
            additional_inputs=[
                gr.Slider(1, 512, value=128, step=1, label="Max new tokens"),
                gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature"),
            ],
            examples=[["Give me three tips for a good night's sleep.", 128, 0.7]],
            cache_examples=False,
            api_name="chat",
            api_description="Send a message with the history so far; returns the assistant's reply, streamed.",
        )
    return demo


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)

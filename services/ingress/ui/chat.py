from __future__ import annotations

import gradio as gr

from services.errors import RaydioError
from services.ingress.backends import ModelBackends


def build_chat_ui(backends: ModelBackends) -> gr.Blocks:
    async def respond(message: str, history: list[dict], max_tokens: int, temperature: float):
        """Answer a message given the conversation so far; streams the growing answer.

        Args:
            message: The user's new message.
            history: Earlier turns as {"role", "content"} messages (kept by the UI; API callers start empty).
            max_tokens: Most tokens to generate.
            temperature: 0 answers deterministically; higher is more varied.
        Returns:
            The assistant's answer so far, growing as tokens arrive.
        """
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
            textbox=gr.Textbox(label="Message", placeholder="Ask something…", submit_btn=True),
            additional_inputs=[
                gr.Slider(1, 512, value=128, step=1, label="Max new tokens"),
                gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature"),
            ],
            examples=[["Give me three tips for a good night's sleep.", 128, 0.7]],
            cache_examples=False,
            api_name="chat",
            api_description="Ask the chat model one message (each API call starts a new conversation); the reply streams.",
        )
    return demo


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)

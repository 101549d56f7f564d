from __future__ import annotations

import io

import gradio as gr

from services.errors import RaydioError
from services.ingress.backends import ModelBackends


def build_digits_ui(backends: ModelBackends, _sessions=None) -> gr.Blocks:
    async def classify(drawing) -> tuple[dict[str, float], list[list[float]]]:
        """Classify a drawn or uploaded digit; returns the probabilities per digit and the 8x8 grid the model saw."""
        image = drawing.get("composite") if isinstance(drawing, dict) else drawing
        if image is None:
            raise gr.Error("Draw a digit first.")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        try:
            result = await backends.classify_image(buffer.getvalue())
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        return {str(d): p for d, p in enumerate(result["probabilities"])}, result["pixels"]

    with gr.Blocks(title="raydio · digits") as demo:
        gr.Markdown("## Digits\nDraw one digit (0–9) large in the middle of the canvas, then press *Classify*.")
        with gr.Row():
            sketch = gr.Sketchpad(type="pil", image_mode="RGBA", canvas_size=(280, 280), sources=("upload",),
                                  brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"),
                                  label="Your digit")
            with gr.Column():
                label = gr.Label(num_top_classes=3, label="Prediction")
                grid = gr.Dataframe(label="What the model saw (8x8, ink 0–16)", interactive=False)
        button = gr.Button("Classify", variant="primary")
        button.click(classify, sketch, [label, grid], api_name="classify",
                     api_description="Classify a handwritten digit image; returns probabilities and the 8x8 grid.")
    return demo

"""A UI per tensor model, generated from its signature: a sketchpad for models that take images, otherwise one
JSON box per input; a label for classifiers, otherwise the outputs as JSON."""

from __future__ import annotations

import io
import json

import gradio as gr
import numpy as np

from services.config import TorchScriptModelArgs
from services.core.services import Core
from services.errors import RaydioError
from services.ingress.ui.context import queue_size


def build_tensor_ui(core: Core, entry: TorchScriptModelArgs) -> gr.Blocks:
    running, waiting = queue_size(core, "torchscript")
    with gr.Blocks(title=f"raydio · {entry.name}") as demo:
        gr.Markdown(f"## {entry.name}\n{entry.description}")
        if entry.image is not None and entry.labels:
            _image_form(core, entry, running)
        else:
            _tensor_form(core, entry, running)
    return demo.queue(max_size=waiting)


def _image_form(core: Core, entry: TorchScriptModelArgs, running: int) -> None:
    async def classify(drawing) -> tuple[dict[str, float], list]:
        """Classify a drawn or uploaded image; returns the probability per class and the input the model saw."""
        image = drawing.get("composite") if isinstance(drawing, dict) else drawing
        if image is None:
            raise gr.Error("Draw or upload an image first.")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        try:
            result = await core.models.classify_image(entry.name, buffer.getvalue())
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        seen = np.asarray(result.input)
        return dict(zip(entry.labels, result.probabilities, strict=True)), seen.reshape(seen.shape[-2:]).tolist()

    gr.Markdown("Draw large in the middle of the canvas (or upload an image), then press *Classify*.")
    with gr.Row():
        sketch = gr.Sketchpad(type="pil", image_mode="RGBA", canvas_size=(280, 280), sources=("upload",),
                              brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"), label="Your image")
        with gr.Column():
            label = gr.Label(num_top_classes=3, label="Prediction")
            grid = gr.Dataframe(label="What the model saw", interactive=False)
    gr.Button("Classify", variant="primary").click(
        classify, sketch, [label, grid], api_name="classify", concurrency_limit=running,
        api_description="Classify an image; returns the probability per class and the input the model saw.")


def _tensor_form(core: Core, entry: TorchScriptModelArgs, running: int) -> None:
    specs = entry.signature.inputs

    async def run(*texts: str):
        """Run the model on one JSON row (or a list of rows) per input."""
        try:
            arrays = {spec.name: np.asarray(json.loads(text)) for spec, text in zip(specs, texts, strict=True)}
        except (json.JSONDecodeError, ValueError) as exc:
            raise gr.Error(f"Each input must be JSON numbers (a row or a list of rows): {exc}") from exc
        arrays = {name: (a[None] if a.ndim == len(spec.shape) - 1 else a) for (name, a), spec in zip(arrays.items(), specs, strict=True)}
        try:
            if entry.labels and len(specs) == 1:
                results = await core.models.classify(entry.name, arrays[specs[0].name])
                return dict(zip(entry.labels, results[0].probabilities, strict=True)), {
                    "predictions": [{"class_name": r.class_name, "confidence": r.confidence} for r in results]}
            _, outputs = await core.models.predict(entry.name, arrays)
        except RaydioError as exc:
            raise gr.Error(exc.message) from exc
        return None, {name: value.tolist() for name, value in outputs.items()}

    boxes = [gr.Textbox(label=f"{spec.name} ({spec.datatype} {list(spec.shape)[1:]}, JSON)", lines=3,
                        placeholder=json.dumps(np.zeros([d if d > 0 else 1 for d in spec.shape[1:]]).tolist()),
                        info=spec.description or None) for spec in specs]
    label = gr.Label(label="Prediction", visible=bool(entry.labels))
    outputs = gr.JSON(label="Outputs")
    gr.Button("Run", variant="primary").click(run, boxes, [label, outputs], api_name="predict", concurrency_limit=running,
                                              api_description="Run the model on JSON rows, one text per input.")

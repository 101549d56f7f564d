"""``torchscript`` deployment: requests are dicts of input arrays, merged along the batch dimension by ``@serve.batch``.

Inputs are checked against the declared signature here, once, for every face (V2, REST, MCP, UI, jobs).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import numpy as np
from opentelemetry import context as otel_context
from ray import serve

from services.config import TorchScriptModelArgs
from services.deployments import BatchedDeployment
from services.errors import InputTooLarge, InvalidInput
from services.models import sources
from services.models.images import image_to_input
from services.models.tensor import TensorModel, numpy_dtype
from services.telemetry import tracing
from services.telemetry.gpu import start_gpu_sampler
from services.telemetry.metrics import model_metrics


@serve.deployment
class TensorDeployment(BatchedDeployment):
    ARGS, BATCH_METHOD = TorchScriptModelArgs, "_predict_batch"

    def __init__(self, model: dict, cache_dir: str, device: str = "auto", limits: dict | None = None) -> None:
        self._start(model, limits)
        # A signature the file does not accept fails here (dry run on zeros), so the replica never becomes healthy.
        self.model = TensorModel(sources.resolve(self.spec.source, Path(cache_dir)), self.spec, device).load()
        self.batch_sizes: Counter[int] = Counter()
        start_gpu_sampler(self.MODEL, self.model.device)

    @tracing.entrypoint
    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One array per declared input (same number of rows) → one array per declared output."""
        arrays = self._checked(inputs)
        outputs = await self._predict_batch(arrays, otel_context.get_current())
        return {spec.name: array for spec, array in zip(self.spec.signature.outputs, outputs, strict=True)}

    @tracing.entrypoint
    async def predict_image(self, data: bytes) -> dict:
        """Decode a PNG/JPEG, preprocess it as the entry's ``image`` says, and run it as one row of the first input."""
        if self.spec.image is None or len(self.spec.signature.inputs) != 1:
            raise InvalidInput(f"Model {self.MODEL!r} does not take images; send tensors.", "file")
        spec = self.spec.signature.inputs[0]
        row = await asyncio.to_thread(image_to_input, data, self.spec.image, spec, self.limits.max_image_pixels)
        outputs = await self.predict({spec.name: row[None]})
        return {"input": row, "outputs": outputs}

    def _checked(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        declared = self.spec.signature.inputs
        names = list(inputs)
        if sorted(names) != sorted(s.name for s in declared):
            raise InvalidInput(f"Model {self.MODEL!r} takes inputs {[s.name for s in declared]}; got {names}.", "inputs")
        arrays, rows = [], None
        for spec in declared:
            try:
                with np.errstate(over="ignore"):  # 1e300 becomes inf here, and is refused as not finite below
                    array = np.asarray(inputs[spec.name], dtype=numpy_dtype(spec.datatype))
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"Input {spec.name!r} must be a rectangular array of {spec.datatype} values.", spec.name) from exc
            if array.ndim != len(spec.shape) or any(d not in (-1, a) for d, a in zip(spec.shape, array.shape, strict=True)):
                raise InvalidInput(f"Input {spec.name!r} has shape {list(array.shape)}; expected {list(spec.shape)} "
                                   "(-1: any size).", spec.name)
            if len(array) == 0:
                raise InvalidInput(f"Input {spec.name!r} is empty; send at least one row.", spec.name)
            if rows is not None and len(array) != rows:
                raise InvalidInput(f"Every input needs the same number of rows; {spec.name!r} has {len(array)}, not {rows}.", spec.name)
            rows = len(array)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InvalidInput(f"Input {spec.name!r} holds NaN or infinite values.", spec.name)
            if spec.range is not None and (array.min() < spec.range[0] or array.max() > spec.range[1]):
                raise InvalidInput(f"Values of input {spec.name!r} must be between {spec.range[0]:g} and {spec.range[1]:g}.",
                                   spec.name)
            arrays.append(array)
        if rows > self.limits.max_tensor_rows:
            raise InputTooLarge(f"Got {rows} rows. At most {self.limits.max_tensor_rows} per request.", declared[0].name)
        return arrays

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, requests: list[list[np.ndarray]], contexts: list[otel_context.Context]) -> list[list[np.ndarray]]:
        self.batch_sizes[len(requests)] += 1
        merged = [np.concatenate(parts) for parts in zip(*requests, strict=True)]
        rows = len(merged[0])
        with tracing.batch_spans(self.MODEL, contexts, rows) as links, \
                tracing.span(f"{self.MODEL}.forward", links, **{"raydio.batch.requests": len(requests), "raydio.batch.inputs": rows}):
            started = time.perf_counter()
            outputs = await asyncio.to_thread(self.model.predict, merged)
            model_metrics().observe_forward(self.MODEL, rows, time.perf_counter() - started)
        split, start = [], 0
        for request in requests:
            count = len(request[0])
            split.append([output[start:start + count] for output in outputs])
            start += count
        return split

    @tracing.entrypoint
    def info(self) -> dict:
        return self._info(batch_sizes=dict(self.batch_sizes))

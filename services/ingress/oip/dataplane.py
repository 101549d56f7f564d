"""Protocol logic: model metadata, readiness and inference over the core, in numpy.

Every ``torchscript`` entry of the catalogue is a V2 model with its declared signature (classifiers also get a
``label`` output and the classification extension); every ``sentence-embedding`` entry takes BYTES text and
returns FP32 vectors. Each request is checked against the signature before a model replica sees it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from services.config import ModelEntry
from services.core.client import ModelStatus
from services.core.services import Core
from services.errors import InvalidInput, ModelNotFound
from services.ingress.oip.tensors import decode_input, encode_output, split_binary
from services.ingress.oip.types import InferenceRequest, RequestOutput

SERVER_NAME = "raydio"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "classification"]
MODEL_VERSION = "1"
TENSOR_KINDS = ("torchscript", "sentence-embedding")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: variable
    description: str
    also_accepts: tuple[tuple[int, ...], ...] = ()  # other shapes taken as the same data
    labels: tuple[str, ...] = ()  # class labels: the output supports the classification extension

    def accepts(self, shape: list[int]) -> bool:
        return any(len(shape) == len(allowed) and all(a in (-1, s) for a, s in zip(allowed, shape, strict=True))
                   for allowed in (self.shape, *self.also_accepts))


@dataclass(frozen=True)
class TensorModel:
    """A catalogue entry's tensor signature and how to run it through the core."""

    entry: ModelEntry
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str = "pytorch"
    output_index: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_index", {spec.name: spec for spec in self.outputs})

    @property
    def name(self) -> str:
        return self.entry.name

    async def predict(self, core: Core, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.entry.kind == "sentence-embedding":
            texts = []
            for i, element in enumerate(inputs["text"].reshape(-1)):
                try:
                    text = element.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(f"Element {i} of input 'text' is not valid UTF-8.", "text") from None
                if not text.strip():
                    raise InvalidInput(f"Element {i} of input 'text' is empty; every element must contain text.", "text")
                texts.append(text)
            result = await core.models.embed(self.name, texts)
            return {"embedding": np.asarray(result.vectors, dtype=np.float32), "tokens": np.asarray(result.tokens, dtype=np.int64)}
        rows = {spec.name: inputs[spec.name].reshape(-1, *spec.shape[1:]) for spec in self.inputs}
        _, outputs = await core.models.predict(self.name, rows)
        if self.entry.labels:
            outputs["label"] = outputs[self.entry.signature.outputs[0].name].argmax(axis=1).astype(np.int64)
        return outputs


def tensor_model(entry: ModelEntry, dimensions: int = -1) -> TensorModel:
    if entry.kind == "sentence-embedding":
        return TensorModel(
            entry,
            inputs=(TensorSpec("text", "BYTES", (-1,), "UTF-8 strings to embed, one per element; [-1, 1] is accepted too.",
                               also_accepts=((-1, 1),)),),
            outputs=(TensorSpec("embedding", "FP32", (-1, dimensions), "Sentence embeddings"
                                + (" (L2-normalised)." if entry.normalize else ".")),
                     TensorSpec("tokens", "INT64", (-1,), "Tokens each string cost.")))
    inputs = tuple(TensorSpec(t.name, t.datatype, t.shape, t.description + (
        f" [-1, {math.prod(t.shape[1:])}] is accepted too." if _flat(t.shape) else ""),
        also_accepts=((-1, math.prod(t.shape[1:])),) if _flat(t.shape) else ()) for t in entry.signature.inputs)
    outputs = [TensorSpec(t.name, t.datatype, t.shape, t.description, labels=entry.labels if i == 0 else ())
               for i, t in enumerate(entry.signature.outputs)]
    if entry.labels:
        outputs[0] = TensorSpec(outputs[0].name, "FP32" if entry.postprocess == "softmax" else outputs[0].datatype,
                                outputs[0].shape, (outputs[0].description + " Supports the classification extension.").strip(),
                                labels=entry.labels)
        outputs.append(TensorSpec("label", "INT64", (-1,), "Index of the most likely class."))
    return TensorModel(entry, inputs, tuple(outputs))


def _flat(shape: tuple[int, ...]) -> bool:
    """Rows of fixed multi-dimensional shape may also be sent flat, as tritonclient users often do."""
    return len(shape) > 2 and -1 not in shape[1:]


@dataclass
class InferenceResult:
    """The response document and the binary data that follows it (empty when everything is JSON)."""

    document: dict
    binary: list[bytes]


class DataPlane:
    def __init__(self, core: Core) -> None:
        self.core = core

    def model(self, name: str, version: str | None = None) -> TensorModel:
        entry = self.core.catalogue.entries.get(name)
        if entry is None or entry.kind not in TENSOR_KINDS:
            tensor_models = [m for m in self.core.catalogue.names if self.core.catalogue.get(m).kind in TENSOR_KINDS]
            problem = "has no tensor interface; use the /v1 API" if entry is not None else "is unknown"
            raise ModelNotFound(f"Model {name!r} {problem}. Tensor models: {', '.join(tensor_models)}.", "model")
        if version not in (None, MODEL_VERSION):
            raise ModelNotFound(f"Model {name!r} has no version {version!r}. Versions: {MODEL_VERSION}.", "model_version")
        return tensor_model(entry)

    @staticmethod
    def server_metadata() -> dict:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    async def server_ready(self) -> list[ModelStatus]:
        return await self.core.client.statuses()

    async def model_ready(self, name: str, version: str | None = None) -> ModelStatus:
        return await self.core.client.status(self.model(name, version).name)

    async def model_metadata(self, name: str, version: str | None = None) -> dict:
        model = self.model(name, version)
        if model.entry.kind == "sentence-embedding":  # the vector size is the model's: ask its replica
            status = await self.core.client.status(name)
            model = tensor_model(model.entry, int(status.info.get("dimensions", -1)))

        def tensors(specs: tuple[TensorSpec, ...]) -> list[dict]:
            return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

        return {"name": model.name, "versions": [MODEL_VERSION], "platform": model.platform,
                "inputs": tensors(model.inputs), "outputs": tensors(model.outputs),
                "parameters": {"descriptions": {s.name: s.description for s in (*model.inputs, *model.outputs)}}}

    async def infer(self, name: str, request: InferenceRequest, tail: bytes = b"", version: str | None = None) -> InferenceResult:
        model = self.model(name, version)
        _refuse_unsupported(request)
        arrays = self._decode_inputs(model, request, tail)
        requested = request.outputs or [RequestOutput(name=spec.name) for spec in model.outputs]
        for output in requested:  # check before running the model
            self._output_spec(model, output)
            _classification_count(model, output)
        results = await model.predict(self.core, arrays)
        binary_default = bool((request.parameters or {}).get("binary_data_output", False))
        outputs, binary = [], []
        for output in requested:
            spec = self._output_spec(model, output)
            datatype, array = spec.datatype, results[spec.name]
            count = _classification_count(model, output)
            if count:
                datatype, array = "BYTES", _top_classes(array, count, spec.labels)
            as_binary = bool((output.parameters or {}).get("binary_data", binary_default))
            tensor, raw = encode_output(spec.name, datatype, array, as_binary)
            outputs.append(tensor)
            if raw is not None:
                binary.append(raw)
        document = {"model_name": model.name, "model_version": MODEL_VERSION, "outputs": outputs}
        if request.id is not None:
            document["id"] = request.id
        return InferenceResult(document, binary)

    @staticmethod
    def _decode_inputs(model: TensorModel, request: InferenceRequest, tail: bytes) -> dict[str, np.ndarray]:
        declared = {spec.name: spec for spec in model.inputs}
        names = [tensor.name for tensor in request.inputs]
        unknown = [n for n in names if n not in declared]
        missing = [n for n in declared if n not in names]
        if unknown or missing or len(set(names)) != len(names):
            raise InvalidInput(f"Model {model.name!r} takes inputs {list(declared)} once each; got {names}.", "inputs")
        arrays = {}
        for tensor, raw in zip(request.inputs, split_binary(request.inputs, tail), strict=True):
            spec = declared[tensor.name]
            if tensor.datatype != spec.datatype:
                raise InvalidInput(f"Input {tensor.name!r} must be {spec.datatype}, got {tensor.datatype}.", tensor.name)
            if not spec.accepts(tensor.shape):
                shapes = " or ".join(str(list(s)) for s in (spec.shape, *spec.also_accepts))
                raise InvalidInput(f"Input {tensor.name!r} has shape {tensor.shape}; expected {shapes} (-1: any size).",
                                   tensor.name)
            if tensor.shape[0] == 0:
                raise InvalidInput(f"Input {tensor.name!r} is empty; send at least one row.", tensor.name)
            arrays[tensor.name] = decode_input(tensor, raw)
        return arrays

    @staticmethod
    def _output_spec(model: TensorModel, output: RequestOutput) -> TensorSpec:
        spec = model.output_index.get(output.name)
        if spec is None:
            raise InvalidInput(f"Model {model.name!r} has no output {output.name!r}. Outputs: {list(model.output_index)}.",
                               "outputs")
        return spec


def _refuse_unsupported(request: InferenceRequest) -> None:
    """Parameters raydio cannot honour are errors, not silently ignored."""
    for tensor in (*request.inputs, *(request.outputs or ())):
        if "shared_memory_region" in (tensor.parameters or {}):
            raise InvalidInput(f"Tensor {tensor.name!r} uses shared memory, which raydio does not support; "
                               "send the data in the body.", tensor.name)
    if (request.parameters or {}).get("sequence_id") not in (None, 0, ""):
        raise InvalidInput("sequence_id is set, but raydio's models are stateless (no sequence batching).", "sequence_id")


def _classification_count(model: TensorModel, output: RequestOutput) -> int:
    count = (output.parameters or {}).get("classification")
    if count is None:
        return 0
    spec = model.output_index[output.name]
    if not spec.labels:
        raise InvalidInput(f"Output {output.name!r} of {model.name!r} is not a class score; classification is not "
                           "available for it.", "outputs")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= len(spec.labels):
        raise InvalidInput(f"classification for {output.name!r} must be an integer from 1 to {len(spec.labels)}.", "outputs")
    return count


def _top_classes(scores: np.ndarray, count: int, labels: tuple[str, ...]) -> np.ndarray:
    """Classification extension: "<value>:<index>:<label>" for the ``count`` highest scores of each row."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    rows = [[f"{row[i]:f}:{i}:{labels[i]}".encode() for i in top] for row, top in zip(scores, order, strict=True)]
    array = np.empty((len(rows), count), dtype=object)
    array[:] = rows
    return array


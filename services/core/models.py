"""Model services every face shares: embeddings, similarity ranking, tensor inference and classification."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.config import TorchScriptModelArgs
from services.core.client import ModelClient
from services.errors import InvalidInput


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: list[list[float]]
    tokens: list[int]

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


@dataclass(frozen=True)
class Ranked:
    index: int
    text: str
    score: float


@dataclass(frozen=True)
class Classification:
    label: int  # index of the most likely class
    class_name: str
    confidence: float
    probabilities: list[float]
    input: list | None = None  # for images: the tensor row the model saw


class ModelService:
    def __init__(self, client: ModelClient) -> None:
        self.client = client
        self.catalogue = client.catalogue

    async def embed(self, model: str | None, texts: list[str]) -> Embeddings:
        entry = self.catalogue.require(model, "sentence-embedding")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInput(f"Input {i} is empty; every input must contain text.", "input")
        result = await self.client.embed(entry.name, texts)
        return Embeddings(entry.name, result["vectors"], result["tokens"])

    async def rank(self, model: str | None, query: str, texts: list[str]) -> list[Ranked]:
        """``texts`` by cosine similarity to ``query``, most similar first (ties keep their order)."""
        result = await self.embed(model, [query, *texts])
        vectors = np.asarray(result.vectors, dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = vectors[1:] @ vectors[0]
        return [Ranked(int(i), texts[i], round(float(scores[i]), 4)) for i in np.argsort(-scores, kind="stable")]

    async def predict(self, model: str | None, inputs: dict[str, np.ndarray]) -> tuple[TorchScriptModelArgs, dict[str, np.ndarray]]:
        entry = self.catalogue.require(model, "torchscript")
        return entry, await self.client.predict(entry.name, inputs)

    async def classify(self, model: str | None, rows) -> list[Classification]:
        """Rows of a classifier's (only) input → the most likely class of each, with every class's probability."""
        entry = self.catalogue.classifier(model)
        spec = entry.signature.inputs[0]
        if len(entry.signature.inputs) != 1:
            raise InvalidInput(f"Model {entry.name!r} takes several inputs; use its tensor API.", "inputs")
        try:
            array = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{spec.name} must be a rectangular array of numbers (rows of equal length).", spec.name) from exc
        array = _as_rows(array, spec.shape, spec.name)
        outputs = await self.client.predict(entry.name, {spec.name: array})
        return [_classification(entry, row) for row in outputs[entry.signature.outputs[0].name]]

    async def classify_image(self, model: str | None, data: bytes) -> Classification:
        entry = self.catalogue.classifier(model)
        if entry.image is None:
            raise InvalidInput(f"Model {entry.name!r} does not take images; send {entry.signature.inputs[0].name}.", "file")
        result = await self.client.predict_image(entry.name, data)
        first = result["outputs"][entry.signature.outputs[0].name][0]
        return _classification(entry, first, np.asarray(result["input"]).tolist())


def _as_rows(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """One row (the shape without the batch), a flat row, or a batch of rows → a batch."""
    row_shape = shape[1:]
    fixed = -1 not in row_shape
    size = int(np.prod(row_shape)) if fixed else None
    if array.ndim == len(row_shape) and (not fixed or array.shape == row_shape):
        return array[None]
    if fixed and array.shape == (size,):
        return array.reshape(1, *row_shape)
    if fixed and array.ndim == 2 and array.shape[1] == size and len(row_shape) > 1:
        return array.reshape(-1, *row_shape)
    if array.ndim == len(shape):
        return array
    expected = "x".join(str(d) for d in row_shape)
    raise InvalidInput(f"Got {name} of shape {list(array.shape)}. Send one {expected} row, "
                       f"{size if fixed else 'its'} flat values, or a list of rows.", name)


def _classification(entry: TorchScriptModelArgs, scores, seen=None) -> Classification:
    probabilities = [float(p) for p in scores]
    label = int(np.argmax(probabilities))
    return Classification(label, entry.labels[label], probabilities[label], probabilities, seen)

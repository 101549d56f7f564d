"""Tensor models over REST: KServe V1 ``:predict`` for any ``torchscript`` entry, and ``/v1/{name}/classify`` (JSON
rows or an uploaded image) for the ones with labels. ``/v1/digits/classify`` is the default catalogue's case."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, File, UploadFile

from services.errors import InvalidInput
from services.ingress.dependencies import LimitsDep, ModelsDep
from services.ingress.schemas import (
    ERROR_RESPONSES,
    ClassifyRequest,
    ClassifyResponse,
    Prediction,
    V1PredictRequest,
    V1PredictResponse,
)

router = APIRouter(prefix="/v1", tags=["tensor models"], responses=ERROR_RESPONSES)


@router.post("/models/{name}:predict", response_model=V1PredictResponse)
async def predict(name: str, body: V1PredictRequest, models: ModelsDep) -> V1PredictResponse:
    """KServe V1 prediction: instances in, one prediction per instance out."""
    entry = models.catalogue.require(name, "torchscript", "name")
    inputs = entry.signature.inputs
    if len(inputs) == 1:
        columns = {inputs[0].name: body.instances}
    else:
        if not all(isinstance(i, dict) for i in body.instances):
            raise InvalidInput(f"Model {name!r} takes inputs {[s.name for s in inputs]}: send each instance as an "
                               "object keyed by input name.", "instances")
        try:
            columns = {spec.name: [instance[spec.name] for instance in body.instances] for spec in inputs}
        except KeyError as exc:
            raise InvalidInput(f"An instance lacks input {exc.args[0]!r}.", "instances") from None
    try:
        arrays = {key: np.asarray(value) for key, value in columns.items()}
    except ValueError as exc:
        raise InvalidInput("Every instance must have the same shape.", "instances") from exc
    if any(array.dtype == object for array in arrays.values()):
        raise InvalidInput("Every instance must be a rectangular array of numbers.", "instances")
    _, outputs = await models.predict(name, arrays)
    if len(outputs) == 1:
        return V1PredictResponse(predictions=next(iter(outputs.values())).tolist())
    rows = len(next(iter(outputs.values())))
    return V1PredictResponse(predictions=[{key: value[i].tolist() for key, value in outputs.items()} for i in range(rows)])


@router.post("/{name}/classify", response_model=ClassifyResponse)
async def classify(name: str, body: ClassifyRequest, models: ModelsDep) -> ClassifyResponse:
    """Classify rows of a classifier's input (for `digits`: 8x8 grids of ink 0..16), one prediction per row."""
    model = _same_model(name, body.model)
    return ClassifyResponse(model=model, predictions=[Prediction.of(r) for r in await models.classify(model, body.inputs)])


@router.post("/{name}/classify-image", response_model=ClassifyResponse)
async def classify_image(name: str, models: ModelsDep, limits: LimitsDep,
                         file: UploadFile = File(description="A PNG or JPEG, any size.")) -> ClassifyResponse:
    """Classify an uploaded image with a classifier that takes images (for `digits`: cropped and scaled the way
    scikit-learn's digits were made)."""
    data = await file.read(limits.max_body_bytes + 1)
    return ClassifyResponse(model=name, predictions=[Prediction.of(await models.classify_image(name, data))])


def _same_model(path_name: str, body_name: str | None) -> str:
    if body_name not in (None, path_name):
        raise InvalidInput(f"The body names model {body_name!r} but the path {path_name!r}; leave `model` out.", "model")
    return path_name

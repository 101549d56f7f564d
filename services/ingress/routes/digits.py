"""Handwritten digit classification from a JSON pixel grid or an uploaded image."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, File, UploadFile

from services.errors import InvalidInput
from services.ingress.backends import require_model
from services.ingress.dependencies import BackendsDep, LimitsDep
from services.ingress.schemas import ERROR_RESPONSES, DigitPrediction, DigitsRequest, DigitsResponse

router = APIRouter(prefix="/v1/digits", tags=["digits"], responses=ERROR_RESPONSES)


def _as_grids(pixels) -> np.ndarray:
    with np.errstate(over="ignore"):  # 1e300 becomes inf here; the model refuses non-finite pixels with a 400
        array = np.asarray(pixels, dtype=np.float32)
    if array.shape == (64,):
        return array.reshape(1, 8, 8)
    if array.shape == (8, 8):
        return array[None]
    if array.ndim == 3 and array.shape[1:] == (8, 8):
        return array
    raise InvalidInput(
        f"Got pixels of shape {list(array.shape)}. Send one 8x8 grid, 64 values, or a list of 8x8 grids.", "pixels"
    )


def _prediction(probabilities: list[float], pixels=None) -> DigitPrediction:
    return DigitPrediction(label=int(np.argmax(probabilities)), probabilities=probabilities, pixels=pixels)


@router.post("/classify", response_model=DigitsResponse)
async def classify_pixels(body: DigitsRequest, backends: BackendsDep) -> DigitsResponse:
    """Classify 8x8 grids of ink intensity (0..16), one prediction per grid."""
    require_model(body.model, "digits")
    try:
        grids = _as_grids(body.pixels)
    except ValueError as exc:  # ragged nested lists
        raise InvalidInput("pixels must be a rectangular array of numbers (rows of equal length).", "pixels") from exc
    return DigitsResponse(predictions=[_prediction(p) for p in await backends.classify(grids)])


@router.post("/classify-image", response_model=DigitsResponse)
async def classify_image(backends: BackendsDep, limits: LimitsDep,
                         file: UploadFile = File(description="A PNG or JPEG of one handwritten digit, any size.")) -> DigitsResponse:
    """Classify an uploaded image; it is cropped and scaled the way scikit-learn's digits were made."""
    data = await file.read(limits.max_body_bytes + 1)
    result = await backends.classify_image(data)
    return DigitsResponse(predictions=[_prediction(result["probabilities"], result["pixels"])])

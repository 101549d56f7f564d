"""Digits deployment: requests are stacks of 8x8 grids, classified together by ``@serve.batch``."""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from pathlib import Path

import numpy as np
from opentelemetry import context as otel_context
from ray import serve

from services.config import BatchingArgs, LimitsArgs
from services.deployments import split_like
from services.errors import InputTooLarge, InvalidInput
from services.models.digits import GRID, MAX_INK, DigitsModel, image_to_grid
from services.telemetry import setup_process, tracing
from services.telemetry.gpu import start_gpu_sampler
from services.telemetry.metrics import model_metrics


@serve.deployment(name="digits")
class DigitsDeployment:
    MODEL = "digits"

    def __init__(self, cache_dir: str, device: str = "auto", seed: int = 0, limits: dict | None = None) -> None:
        setup_process(self.MODEL)
        self.limits = LimitsArgs.model_validate(limits or {})
        self.model = DigitsModel(Path(cache_dir), device, seed).load()
        self.batch_sizes: Counter[int] = Counter()
        start_gpu_sampler(self.MODEL, self.model.device)

    def reconfigure(self, user_config: dict) -> None:
        batching = BatchingArgs.model_validate(user_config)
        self._classify_batch.set_max_batch_size(batching.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    @tracing.entrypoint
    async def classify(self, grids: np.ndarray) -> list[list[float]]:
        """``grids``: (n, 8, 8) ink in [0, 16] → class probabilities per grid."""
        return await self._classify(grids)

    async def _classify(self, grids: np.ndarray) -> list[list[float]]:
        grids = np.asarray(grids, dtype=np.float32)
        if grids.ndim != 3 or grids.shape[1:] != (GRID, GRID) or len(grids) == 0:
            raise InvalidInput(f"Expected a non-empty stack of {GRID}x{GRID} grids, got shape {list(grids.shape)}.", "pixels")
        if len(grids) > self.limits.max_digit_images:
            raise InputTooLarge(f"Got {len(grids)} images. At most {self.limits.max_digit_images} per request.", "pixels")
        if not np.isfinite(grids).all() or grids.min() < 0 or grids.max() > MAX_INK:
            raise InvalidInput(f"Pixel values must be finite numbers between 0 and {MAX_INK:g}.", "pixels")
        return await self._classify_batch(grids, otel_context.get_current())

    @tracing.entrypoint
    async def classify_image(self, data: bytes) -> dict:
        """Decode an uploaded PNG/JPEG, scale it like scikit-learn's digits and classify it."""
        grid = await asyncio.to_thread(self._decode, data)
        return {"pixels": grid.tolist(), "probabilities": (await self._classify(grid[None]))[0]}

    def _decode(self, data: bytes) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        if not data:
            raise InvalidInput("The uploaded image is empty.", "file")
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > self.limits.max_image_pixels:
                    raise InputTooLarge(
                        f"The image is {image.width}x{image.height} pixels. At most "
                        f"{self.limits.max_image_pixels} pixels are accepted.", "file"
                    )
                image.load()
                return image_to_grid(image)
        except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its MAX_IMAGE_PIXELS
            raise InputTooLarge(f"The image is too large to decode ({exc}). At most {self.limits.max_image_pixels} "
                                "pixels are accepted.", "file") from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidInput(f"The upload is not a readable PNG or JPEG image ({exc.__class__.__name__}).", "file") from exc
        except ValueError as exc:
            raise InvalidInput(str(exc), "file") from exc

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _classify_batch(self, requests: list[np.ndarray], contexts: list[otel_context.Context]) -> list[list[list[float]]]:
        self.batch_sizes[len(requests)] += 1
        grids = np.concatenate(requests)
        with tracing.batch_spans(self.MODEL, contexts, len(grids)) as links, \
                tracing.span(f"{self.MODEL}.forward", links, **{"raydio.batch.requests": len(requests), "raydio.batch.inputs": len(grids)}):
            started = time.perf_counter()
            probabilities = (await asyncio.to_thread(self.model.predict, grids)).tolist()
            model_metrics().observe_forward(self.MODEL, len(grids), time.perf_counter() - started)
        return split_like(requests, probabilities)

    @tracing.entrypoint
    def info(self) -> dict:
        return {
            "name": "digits",
            "model_id": self.model.model_id,
            "device": str(self.model.device),
            "test_accuracy": self.model.meta.get("test_accuracy"),
            "batch_sizes": dict(self.batch_sizes),
        }

    def check_health(self) -> None:
        if not self.model.ready:
            raise RuntimeError("digits model is not loaded")

"""Shared fixtures: real models, loaded once per session from the real cache (trained/converted on first use)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _gradio_temp_dir() -> str:
    from services.config import Settings
    from services.runner import gradio_temp_dir

    return str(gradio_temp_dir(Settings()))


os.environ.setdefault("GRADIO_TEMP_DIR", _gradio_temp_dir())  # before anything imports Gradio

# requires_<tool> markers: skip (or, with CI=true, fail) the tests whose system tool is missing.
pytest_plugins = ("tests.support.tools",)


@pytest.fixture(scope="session")
def settings():
    from services.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def sklearn_digits():
    from sklearn.datasets import load_digits

    return load_digits()


def digit_png(grid: np.ndarray, size: int = 160, dark_on_light: bool = True) -> bytes:
    """Render an 8x8 scikit-learn digit as a large PNG, the way a person's scan or drawing would arrive."""
    from PIL import Image

    ink = (np.asarray(grid, dtype=np.float32) / 16.0 * 255).astype(np.uint8)
    pixels = 255 - ink if dark_on_light else ink
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()

"""Handwritten digit classifier: a small CNN trained on scikit-learn's bundled digits data (``builtin://digits-cnn``).

Training is seeded and takes seconds; ``prepare`` exports it to TorchScript once, and the catalogue serves it as an
ordinary ``torchscript`` entry. Inputs are 8x8 grids of ink in [0, 16], the scale of ``sklearn.datasets.load_digits``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

GRID = 8
MAX_INK = 16.0
CHECKPOINT_NAME = "digits-cnn.pt"


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, 1, 8, 8) in [0, 1]
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class TrainResult:
    test_accuracy: float
    train_size: int
    test_size: int
    seed: int


def _split(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / MAX_INK).astype(np.float32)[:, None]
    return train_test_split(x, data.target, test_size=0.2, random_state=seed, stratify=data.target)


def train(seed: int = 0, epochs: int = 40) -> tuple[DigitsCNN, TrainResult]:
    """Train from scratch on the CPU; deterministic for a given seed."""
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = _split(seed)
    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xs), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
            optimiser.step()
    model.eval()
    with torch.inference_mode():
        predicted = model(torch.from_numpy(x_test)).argmax(1).numpy()
    accuracy = float((predicted == y_test).mean())
    return model, TrainResult(accuracy, len(x_train), len(x_test), seed)


def evaluate(model: nn.Module, seed: int = 0) -> float:
    """Accuracy on the held-out split that ``train`` used for the same seed."""
    _, x_test, _, y_test = _split(seed)
    model.eval()
    with torch.inference_mode():
        predicted = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return float((predicted == y_test).mean())


def ensure_checkpoint(cache_dir: Path, seed: int = 0) -> Path:
    """Train once and cache; later calls return the cached file."""
    path = Path(cache_dir) / CHECKPOINT_NAME
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    model, result = train(seed)
    logger.info("trained digits CNN: test accuracy %.4f", result.test_accuracy)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "meta": result.__dict__}, tmp)
    tmp.replace(path)  # atomic: concurrent replicas never read half a file
    return path


class InkClassifier(nn.Module):
    """The CNN as served: 8x8 grids of ink 0..16 in, probabilities out, so the TorchScript file is self-contained."""

    def __init__(self, net: DigitsCNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (n, 8, 8) ink in [0, 16]
        return torch.softmax(self.net(pixels[:, None] / MAX_INK), dim=1)


def export_torchscript(target: Path, cache_dir: Path, seed: int = 0) -> Path:
    """``builtin://digits-cnn``: the cached CNN traced to TorchScript at ``target`` (once)."""
    target = Path(target)
    if target.exists():
        return target
    checkpoint = torch.load(ensure_checkpoint(cache_dir, seed), map_location="cpu")
    net = DigitsCNN()
    net.load_state_dict(checkpoint["state_dict"])
    traced = torch.jit.trace(InkClassifier(net).eval(), torch.zeros(2, GRID, GRID))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    traced.save(str(tmp))
    tmp.replace(target)
    return target


def image_to_grid(image) -> np.ndarray:
    """Scale any PIL image of one digit to an 8x8 grid the way scikit-learn's digits were made.

    The original data are 32x32 bitmaps counted in non-overlapping 4x4 blocks, giving 0..16 per
    cell. We find the ink (dark on light or light on dark, or the alpha channel of a drawing on a
    transparent canvas), crop to it, scale its longer side to 32 pixels, centre it, threshold it
    into a bitmap and count the blocks. Raises ``ValueError`` for an image with no ink.
    """
    from PIL import Image

    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    alpha, darkness = rgba[..., 3] / 255.0, 255.0 - rgba[..., :3].mean(axis=2)
    ink = alpha * darkness  # dark strokes on a light or a transparent canvas
    if ink.max() < 32 and alpha.min() < 1.0:  # light strokes on a transparent canvas
        ink = alpha * 255.0
    border = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    if border.mean() > 127:  # light ink on a dark background
        ink = 255.0 - ink
    if ink.max() < 32:
        raise ValueError("The image contains no visible digit (it is blank or has no contrast).")
    rows, cols = np.where(ink > 0.5 * ink.max())
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # The original bitmaps were size-normalised: the digit's longer side fills the 32-pixel box.
    scale = 32.0 / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    scaled = np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR))
    square = np.zeros((32, 32), dtype=np.float32)
    y0, x0 = (32 - height) // 2, (32 - width) // 2
    square[y0:y0 + height, x0:x0 + width] = scaled
    bitmap = square > 0.5 * square.max()
    return bitmap.reshape(GRID, 4, GRID, 4).sum(axis=(1, 3)).astype(np.float32)


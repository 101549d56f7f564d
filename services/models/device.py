"""Device selection shared by every model."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """Return ``cuda`` when asked for ``auto`` and a GPU is visible, else the CPU.

    An explicit ``cuda`` on a machine without one is an error rather than a silent fallback.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Got device={device!r} but no CUDA device is visible. Use 'auto' or 'cpu'.")
    return torch.device(device)

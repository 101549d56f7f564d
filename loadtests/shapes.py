"""Staged load shapes, selected by name (LOADTEST_SHAPE). Each stage holds a user count for a while; after
the last stage the run ends. LOADTEST_TIME_SCALE stretches or shrinks every stage (0.2 for a quick look).

Plain data and functions (no locust import, which monkey-patches the process): the locustfile wraps them
in a LoadTestShape.
"""

from __future__ import annotations

import os

Stage = tuple[float, int, float]  # (seconds the stage lasts, users, users started per second)

SHAPES: dict[str, list[Stage]] = {
    # A few users for a short while: checks every scenario answers before anything heavier.
    "warmup": [(30, 4, 2)],
    # Warm-up, then three steps of doubling users.
    "steps": [(15, 3, 3), (30, 6, 3), (30, 12, 3), (30, 24, 6)],
    # A steady load, a sudden spike to five times the users, and back.
    "spike": [(15, 3, 3), (25, 6, 3), (20, 30, 30), (25, 6, 30)],
}


def selected(name: str | None = None) -> str:
    name = name or os.environ.get("LOADTEST_SHAPE", "steps")
    if name not in SHAPES:
        raise ValueError(f"Got LOADTEST_SHAPE={name!r}. It must be one of {', '.join(SHAPES)}.")
    return name


def time_scale() -> float:
    return float(os.environ.get("LOADTEST_TIME_SCALE", "1"))


def duration_s(name: str, scale: float = 1.0) -> float:
    return sum(seconds for seconds, _, _ in SHAPES[name]) * scale


def stage_at(name: str, elapsed_s: float, scale: float = 1.0) -> tuple[int, float] | None:
    """(users, spawn rate) at ``elapsed_s`` into the run, or None once the shape is over."""
    end = 0.0
    for seconds, users, rate in SHAPES[name]:
        end += seconds * scale
        if elapsed_s < end:
            return users, rate
    return None

"""Serve deployments: each wraps one model with batching, autoscaling options and a health check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def split_like(requests: Sequence[Sequence], flat: Sequence[T]) -> list[list[T]]:
    """Cut the outputs of one merged forward pass back into one list per request of a ``@serve.batch`` call."""
    out, start = [], 0
    for request in requests:
        out.append(list(flat[start:start + len(request)]))
        start += len(request)
    return out

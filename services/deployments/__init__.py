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


class CatalogueDeployment:
    """What the deployment of every catalogue entry shares: its entry, name, limits, health check and info."""

    ARGS: type  # the entry's *ModelArgs class

    def _start(self, model: dict, limits: dict | None) -> None:
        from services.config import LimitsArgs
        from services.telemetry import setup_process

        self.spec = self.ARGS.model_validate(model)
        self.MODEL = self.spec.name
        setup_process(self.MODEL)
        self.limits = LimitsArgs.model_validate(limits or {})

    def _info(self, **extra) -> dict:
        return {"name": self.MODEL, "kind": self.spec.kind, "model_id": self.spec.identity,
                "device": str(self.model.device), **extra}

    def check_health(self) -> None:
        if not self.model.ready:
            raise RuntimeError(f"{self.MODEL} model is not loaded")


class BatchedDeployment(CatalogueDeployment):
    """A deployment whose ``@serve.batch`` method (``BATCH_METHOD``) takes the entry's batching through user_config,
    so the knobs change without restarting replicas."""

    BATCH_METHOD: str

    def reconfigure(self, user_config: dict) -> None:
        from services.config import BatchingArgs

        self.batching = BatchingArgs.model_validate(user_config)
        method = getattr(self, self.BATCH_METHOD)
        method.set_max_batch_size(self.batching.max_batch_size)
        method.set_batch_wait_timeout_s(self.batching.batch_wait_timeout_s)

"""Typed Serve app builders, named by ``import_path`` in ``configs/serve/*.yaml``.

The same YAML text becomes a RayService's ``serveConfigV2`` on Kubernetes.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from services.config import DeploymentArgs, RaydioAppArgs, get_settings
from services.deployments.chat import ChatDeployment
from services.deployments.digits import DigitsDeployment
from services.deployments.embedder import EmbedderDeployment
from services.deployments.jobs import JobRunnerDeployment
from services.ingress.deployment import IngressDeployment


def _options(args: DeploymentArgs, **extra: Any) -> dict[str, Any]:
    return {**args.serve_options(), **extra}


def build_app(args: RaydioAppArgs | dict[str, Any] | None = None) -> Application:
    """Ingress, the three model deployments and the job runner, each with its own scaling, batching and resources."""
    args = RaydioAppArgs.model_validate(args or {}) if not isinstance(args, RaydioAppArgs) else args
    cache_dir = str(get_settings().cache_dir)
    limits = args.ingress.limits.model_dump()
    embedder = EmbedderDeployment.options(
        **_options(args.embedder, user_config=args.embedder.batching.model_dump())
    ).bind(device=args.device, limits=limits)
    digits = DigitsDeployment.options(
        **_options(args.digits, user_config=args.digits.batching.model_dump())
    ).bind(cache_dir=cache_dir, device=args.device, seed=args.digits.seed, limits=limits)
    chat = ChatDeployment.options(**_options(args.chat)).bind(cache_dir=cache_dir, device=args.device, limits=limits)
    jobs = JobRunnerDeployment.options(**_options(args.jobs)).bind(embedder, digits, chat, args=args.jobs.model_dump())
    return IngressDeployment.options(**_options(args.ingress)).bind(
        embedder, digits, chat, jobs, args=args.ingress.model_dump(), jobs_args=args.jobs.model_dump()
    )

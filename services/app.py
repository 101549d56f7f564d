"""Typed Serve app builders, named by ``import_path`` in ``configs/serve/*.yaml``.

The same YAML text becomes a RayService's ``serveConfigV2`` on Kubernetes.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from services.config import DeploymentArgs, RaydioAppArgs, get_settings
from services.deployments.chat import ChatDeployment
from services.deployments.embedder import EmbedderDeployment
from services.deployments.jobs import JobRunnerDeployment
from services.deployments.remote import RemoteGradioDeployment
from services.deployments.tensor import TensorDeployment
from services.ingress.deployment import IngressDeployment

# One line per model kind: the deployment that serves entries of that kind.
DEPLOYMENTS = {
    "sentence-embedding": EmbedderDeployment,
    "text-generation": ChatDeployment,
    "torchscript": TensorDeployment,
}


def _options(args: DeploymentArgs, **extra: Any) -> dict[str, Any]:
    return {**args.serve_options(), **extra}


def build_app(args: RaydioAppArgs | dict[str, Any] | None = None) -> Application:
    """Ingress, one deployment per catalogue entry, the job runner and the remote backends."""
    args = RaydioAppArgs.model_validate(args or {}) if not isinstance(args, RaydioAppArgs) else args
    cache_dir = str(get_settings().cache_dir)
    limits = args.ingress.limits.model_dump()
    catalogue = [model.model_dump(mode="json") for model in args.models]
    models = {}
    for model, spec in zip(args.models, catalogue, strict=True):
        batching = getattr(model, "batching", None)
        extra = {"user_config": batching.model_dump()} if batching is not None else {}
        models[model.name] = DEPLOYMENTS[model.kind].options(name=model.name, **_options(model.deployment, **extra)).bind(
            model=spec, cache_dir=cache_dir, device=args.device_of(model), limits=limits)
    jobs = JobRunnerDeployment.options(**_options(args.jobs)).bind(
        models, catalogue=catalogue, args=args.jobs.model_dump(), limits=limits)
    remotes = {
        remote.name: RemoteGradioDeployment.options(name=f"remote-{remote.name}", **_options(remote))
        .bind(args=remote.model_dump())
        for remote in args.remotes
    }
    return IngressDeployment.options(**_options(args.ingress)).bind(
        models, jobs, catalogue=catalogue, remotes=remotes, args=args.ingress.model_dump(), jobs_args=args.jobs.model_dump())

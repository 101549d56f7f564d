"""Typed Serve app builders, named by ``import_path`` in ``configs/serve/*.yaml``.

Two applications behind Serve's one HTTP port, built from the same ``RaydioAppArgs`` (one args block in the YAML,
so the catalogue is declared once):

- ``build_app``: the api application ("raydio", route ``/``): the ingress (REST, V2, MCP), one deployment per
  catalogue entry, the job runner, the remote backends and the rate-limit store. Stateless: it autoscales.
- ``build_ui_app``: the ui application (route ``/ui``): the Gradio UIs in one replica, calling the api application's
  deployments through handles.

The same YAML text becomes a RayService's ``serveConfigV2`` on Kubernetes.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from services.config import DeploymentArgs, ModelEntry, RaydioAppArgs, get_settings
from services.deployments import autoscaling
from services.deployments.chat import ChatDeployment
from services.deployments.embedder import EmbedderDeployment
from services.deployments.jobs import JobRunnerDeployment
from services.deployments.ratelimit import RateLimitDeployment
from services.deployments.remote import RemoteGradioDeployment
from services.deployments.tensor import TensorDeployment
from services.ingress.deployment import IngressDeployment, UIIngressDeployment

# One line per model kind: the deployment that serves entries of that kind.
DEPLOYMENTS = {
    "sentence-embedding": EmbedderDeployment,
    "text-generation": ChatDeployment,
    "torchscript": TensorDeployment,
}


def _options(args: DeploymentArgs, **extra: Any) -> dict[str, Any]:
    return {**args.serve_options(), **extra}


def model_options(model: ModelEntry) -> dict[str, Any]:
    """Serve options of a catalogue entry's deployment: its batching goes in as ``user_config``; a model whose
    callers coalesce requests scales on the requests its replicas hold, not on handle calls."""
    batching = getattr(model, "batching", None)
    options = _options(model.deployment, **({"user_config": batching.model_dump()} if batching is not None else {}))
    if getattr(model, "coalesce_calls", 0):
        options["autoscaling_config"].update(autoscaling.REQUEST_SCALING)
    return options


def _validated(args: RaydioAppArgs | dict[str, Any] | None) -> RaydioAppArgs:
    return args if isinstance(args, RaydioAppArgs) else RaydioAppArgs.model_validate(args or {})


def build_app(args: RaydioAppArgs | dict[str, Any] | None = None) -> Application:
    """The api application: ingress, one deployment per catalogue entry, the job runner, the remote backends and
    the rate-limit store."""
    args = _validated(args)
    cache_dir = str(get_settings().cache_dir)
    limits = args.ingress.limits.model_dump()
    catalogue = [model.model_dump(mode="json") for model in args.models]
    models = {}
    for model, spec in zip(args.models, catalogue, strict=True):
        models[model.name] = DEPLOYMENTS[model.kind].options(name=model.name, **model_options(model)).bind(
            model=spec, cache_dir=cache_dir, device=args.device_of(model), limits=limits)
    jobs = JobRunnerDeployment.options(**_options(args.jobs)).bind(
        models, catalogue=catalogue, args=args.jobs.model_dump(), limits=limits)
    remotes = {
        remote.name: RemoteGradioDeployment.options(name=f"remote-{remote.name}", **_options(remote))
        .bind(args=remote.model_dump())
        for remote in args.remotes
    }
    ratelimit = RateLimitDeployment.bind() if args.ingress.auth.enabled and args.ingress.auth.shared_rate_limits else None
    return IngressDeployment.options(**_options(args.ingress)).bind(
        models, jobs, catalogue=catalogue, remotes=remotes, args=args.ingress.model_dump(),
        jobs_args=args.jobs.model_dump(), ratelimit=ratelimit)


def build_ui_app(args: RaydioAppArgs | dict[str, Any] | None = None) -> Application:
    """The ui application: every Gradio UI in one replica, over the deployments of ``args.ui.api_app``."""
    args = _validated(args)
    return UIIngressDeployment.options(**_options(args.ui)).bind(args=args.model_dump(mode="json"))

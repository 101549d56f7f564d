"""The two ingress deployments. Their FastAPI apps (with Gradio mounted) are built on the replica: an app with Gradio
mounted does not pickle, so it must never be built where Serve pickles the class.

- ``IngressDeployment``, in the api application ("raydio"): REST, V2, MCP, keys; stateless, so it autoscales.
- ``UIIngressDeployment``, in the ui application: the Gradio UIs, one replica (Gradio's queue lives in the process).
  It reaches the api application's deployments through handles resolved on first use, so it does not depend on the
  order in which the controller deploys the two applications.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ray import serve
from ray.serve.handle import DeploymentHandle

from services.config import IngressArgs, JobsArgs, RaydioAppArgs, get_settings
from services.core.services import build_core


def replica_name() -> str:
    """This replica's id (``<app>#<deployment>#<unique id>``, as Serve names it), sent in ``X-Raydio-Replica``."""
    try:
        return serve.get_replica_context().replica_id.to_full_id_str()
    except Exception:  # noqa: BLE001 - outside a replica (a test): no name
        return ""


def _limiter(args: IngressArgs, store):
    from services.ingress.auth import RateLimiter, SharedRateLimiter

    return SharedRateLimiter(store) if args.auth.shared_rate_limits and store is not None else RateLimiter()


@serve.deployment(name="ingress")
@serve.ingress()
class IngressDeployment:
    def __init__(self, models: dict[str, DeploymentHandle], jobs: DeploymentHandle, catalogue: list[dict],
                 remotes: dict[str, DeploymentHandle] | None = None, args: dict | None = None,
                 jobs_args: dict | None = None, ratelimit: DeploymentHandle | None = None) -> None:
        from services.telemetry import setup_process

        setup_process("ingress")
        self.args = IngressArgs.model_validate(args or {})
        self.ratelimit = ratelimit
        entries = RaydioAppArgs.model_validate({"models": catalogue}).models
        self.core = build_core(entries, models, get_settings().database_url, self.args.limits,
                               JobsArgs.model_validate(jobs_args or {}), services={"jobs": jobs}, remotes=remotes or {},
                               actions=self.args.actions)

    def __serve_build_asgi_app__(self):
        from services.ingress.app import build_ingress_app

        return build_ingress_app(self.core, self.args, behind_serve_proxy=True, replica=replica_name(),
                                 limiter=_limiter(self.args, self.ratelimit))


class AppHandles(Mapping):
    """Handles to deployments of another Serve application, by name, each made on first use (lazily)."""

    def __init__(self, app_name: str, deployments: dict[str, str]) -> None:
        self.app_name, self.deployments = app_name, deployments  # key -> deployment name
        self._handles: dict[str, DeploymentHandle] = {}

    def __getitem__(self, key: str) -> DeploymentHandle:
        if key not in self._handles:
            self._handles[key] = serve.get_deployment_handle(self.deployments[key], app_name=self.app_name)
        return self._handles[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.deployments)

    def __len__(self) -> int:
        return len(self.deployments)


@serve.deployment(name="ui")
@serve.ingress()
class UIIngressDeployment:
    def __init__(self, args: dict) -> None:
        from services.telemetry import setup_process

        setup_process("ui")
        app_args = RaydioAppArgs.model_validate(args)
        self.args, self.ui = app_args.ingress, app_args.ui
        api = self.ui.api_app
        models = AppHandles(api, {m.name: m.name for m in app_args.models})
        remotes = AppHandles(api, {r.name: f"remote-{r.name}" for r in app_args.remotes})
        store = AppHandles(api, {"ratelimit": "ratelimit"})
        self.ratelimit = lambda: store["ratelimit"]
        self.core = build_core(app_args.models, models, get_settings().database_url, self.args.limits, app_args.jobs,
                               services=AppHandles(api, {"jobs": "jobs"}), remotes=remotes, actions=self.args.actions)

    def __serve_build_asgi_app__(self):
        from services.ingress.app import build_ui_ingress_app

        return build_ui_ingress_app(self.core, self.args, self.ui, behind_serve_proxy=True, replica=replica_name(),
                                    limiter=_limiter(self.args, self.ratelimit))

"""The ingress as a Serve deployment. The FastAPI app (with Gradio mounted) is built on the replica:
an app with Gradio mounted does not pickle, so it must never be built where Serve pickles the class."""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from services.config import IngressArgs, JobsArgs, RaydioAppArgs, get_settings
from services.core.services import build_core


@serve.deployment(name="ingress")
@serve.ingress()
class IngressDeployment:
    def __init__(self, models: dict[str, DeploymentHandle], jobs: DeploymentHandle, catalogue: list[dict],
                 remotes: dict[str, DeploymentHandle] | None = None, args: dict | None = None,
                 jobs_args: dict | None = None) -> None:
        from services.telemetry import setup_process

        setup_process("ingress")
        self.args = IngressArgs.model_validate(args or {})
        entries = RaydioAppArgs.model_validate({"models": catalogue}).models
        self.core = build_core(entries, models, get_settings().database_url, self.args.limits,
                               JobsArgs.model_validate(jobs_args or {}), services={"jobs": jobs}, remotes=remotes or {},
                               actions=self.args.actions)

    def __serve_build_asgi_app__(self):
        from services.ingress.app import build_ingress_app

        return build_ingress_app(self.core, self.args, behind_serve_proxy=True)

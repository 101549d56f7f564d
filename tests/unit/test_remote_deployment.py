"""RemoteGradioDeployment against a real Gradio app on 127.0.0.1 (no Ray: the deployment's class, called directly)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.deployments.remote import MAX_INLINE_FILE_BYTES, RemoteGradioDeployment, safe_upload_name
from services.errors import BadGateway, InvalidInput

APP = Path(__file__).parent / "fixtures" / "gradio_files_app.py"


@pytest.fixture(scope="module")
def gradio_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(APP), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the Gradio test app did not start")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _remote(url: str, api_name: str):
    return RemoteGradioDeployment.func_or_class({"name": "files", "url": url, "api_name": api_name, "timeout_s": 60})


def _file(text: str, name: str) -> dict:
    return {"data": base64.b64encode(text.encode()).decode(), "name": name}


def _leftovers(remote) -> list[Path]:
    return [p for p in remote._workdir.iterdir() if p.name.startswith("request-")]


async def test_concurrent_uploads_with_one_name_keep_their_own_content_and_leave_nothing(gradio_url):
    remote = _remote(gradio_url, "/read")
    assert await remote.predict([_file("warm", "first.txt")]) == "first.txt:warm"  # connects once
    contents = [f"content of call {i}" for i in range(4)]
    results = await asyncio.gather(*(remote.predict([_file(text, "same.txt")]) for text in contents))
    assert results == [f"same.txt:{text}" for text in contents]
    assert _leftovers(remote) == []
    # Two inputs of one request with one name do not collide either; a traversal name is only a name.
    assert await remote.predict([_file("a", "../../../etc/passwd")]) == "passwd:a"
    assert _leftovers(remote) == []


async def test_an_output_over_the_inline_limit_is_an_error_naming_it(gradio_url):
    remote = _remote(gradio_url, "/make")
    small = await remote.predict([1024])
    assert base64.b64decode(small["data"]) == b"x" * 1024
    with pytest.raises(BadGateway) as info:
        await remote.predict([MAX_INLINE_FILE_BYTES + 1])
    assert f"{MAX_INLINE_FILE_BYTES + 1} bytes" in info.value.message and "8 MiB" in info.value.message


async def test_a_url_input_must_be_http(gradio_url, tmp_path):
    """handle_file also takes a local path: it would upload a file of the replica's to the remote."""
    remote = _remote(gradio_url, "/read")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not send")
    for url in (str(secret), f"file://{secret}", "ftp://example.com/x"):
        with pytest.raises(InvalidInput, match="http:// or https://"):
            await remote.predict([{"url": url}])
    assert _leftovers(remote) == []


def test_upload_names_are_made_safe():
    assert safe_upload_name("../../etc/passwd", 0) == "passwd"
    assert safe_upload_name("..\\..\\win.ini", 0) == "win.ini"
    assert safe_upload_name("..", 3) == "input-3"
    assert safe_upload_name("", 1) == "input-1"
    assert safe_upload_name("a\x00b c.png", 0) == "a_b_c.png"
    long = safe_upload_name("n" * 300 + ".png", 0)
    assert len(long) <= 100 and long.endswith(".png")

"""RemoteGradio: any Gradio app (a Hugging Face Space or a server of your own) as a raydio backend.

The deployment calls it with ``gradio_client``; file inputs go through ``handle_file`` and file outputs come
back inline (base64), so REST clients never see the remote's temporary paths. Uploaded files are written to a
directory of their own per request (one folder per input, so equal names never collide) that is removed when the
call ends; a file output over ``MAX_INLINE_FILE_BYTES`` is an error that names the limit, never a truncated file.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from ray import serve

from services.config import RemoteGradioArgs
from services.errors import BadGateway, InvalidInput
from services.telemetry import setup_process, tracing

MAX_INLINE_FILE_BYTES = 8 * 1024 * 1024
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_upload_name(name: Any, index: int) -> str:
    """A file name for an upload: the last path part only, letters, digits, ``._-``, at most 100 characters."""
    base = _UNSAFE_NAME.sub("_", re.split(r"[\\/]", str(name or ""))[-1]).strip("._")
    if not base:
        return f"input-{index}"
    stem, dot, suffix = base.rpartition(".")
    if len(base) > 100:
        base = (stem[: 90 - len(suffix)] + "." + suffix[:9]) if dot and stem else base[:100]
    return base


@serve.deployment(name="remote")
class RemoteGradioDeployment:
    MODEL = "remote"

    def __init__(self, args: dict) -> None:
        self.args = RemoteGradioArgs.model_validate(args)
        self.MODEL = f"remote-{self.args.name}"
        setup_process(self.MODEL)
        self._client = None
        self._lock = threading.Lock()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"raydio-remote-{self.args.name}-"))

    def _connect(self):
        from gradio_client import Client

        with self._lock:
            if self._client is None:  # lazily: a remote that is down must not keep this replica from starting
                token = os.environ.get(self.args.token_env) if self.args.token_env else None
                self._client = Client(self.args.url, token=token, verbose=False, download_files=str(self._workdir))
            return self._client

    @tracing.entrypoint
    async def predict(self, inputs: list[Any]) -> Any:
        """Call the remote's ``api_name`` with ``inputs``; a remote that is down or fails is a BadGateway."""
        uploads = Path(tempfile.mkdtemp(prefix="request-", dir=self._workdir))
        try:
            prepared = [self._prepare(value, i, uploads) for i, value in enumerate(inputs)]
            try:
                result = await asyncio.wait_for(asyncio.to_thread(self._predict, prepared), self.args.timeout_s)
            except (InvalidInput, BadGateway):
                raise
            except TimeoutError:
                raise BadGateway(f"Remote Gradio backend {self.args.name!r} did not answer within {self.args.timeout_s:g}s.",
                                 "backend") from None
            except Exception as exc:  # noqa: BLE001 - anything the remote or the connection raises
                with self._lock:
                    self._client = None  # reconnect next time (the remote may have restarted)
                raise BadGateway(f"Remote Gradio backend {self.args.name!r} failed: {type(exc).__name__}: {str(exc)[:200]}",
                                 "backend") from exc
            return self._inline_files(result)
        finally:
            # asyncio.wait_for may give up while the thread still uploads; the thread then finds its file gone
            # and fails on its own, which nobody waits for any more.
            shutil.rmtree(uploads, ignore_errors=True)

    def _predict(self, inputs: list[Any]) -> Any:
        return self._connect().predict(*inputs, api_name=self.args.api_name)

    def _prepare(self, value: Any, index: int, uploads: Path) -> Any:
        from gradio_client import handle_file

        if isinstance(value, dict) and "url" in value and len(value) == 1:
            # handle_file also takes a local path and would upload that file from this replica: URLs only.
            if not isinstance(value["url"], str) or not re.match(r"https?://", value["url"], re.IGNORECASE):
                raise InvalidInput(f"inputs[{index}].url must be an http:// or https:// URL.", f"inputs.{index}")
            return handle_file(value["url"])
        if isinstance(value, dict) and "data" in value:  # {"data": base64, "name": "x.png"}
            try:
                data = base64.b64decode(value["data"], validate=True)
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"inputs[{index}].data is not valid base64.", f"inputs.{index}") from exc
            folder = uploads / str(index)
            folder.mkdir()
            path = folder / safe_upload_name(value.get("name"), index)
            path.write_bytes(data)
            return handle_file(str(path))
        return value

    def _inline_files(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [self._inline_files(v) for v in value]
        if isinstance(value, dict):
            return {k: self._inline_files(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith(str(self._workdir)) and Path(value).is_file():
            size = Path(value).stat().st_size
            if size > MAX_INLINE_FILE_BYTES:
                raise BadGateway(f"Remote Gradio backend {self.args.name!r} returned a file of {size} bytes "
                                 f"({Path(value).name!r}); files are returned inline up to {MAX_INLINE_FILE_BYTES} bytes "
                                 f"(8 MiB).", "backend")
            return {"name": Path(value).name, "data": base64.b64encode(Path(value).read_bytes()).decode()}
        return value

    @tracing.entrypoint
    def info(self) -> dict:
        return {"name": self.args.name, "model_id": f"gradio:{self.args.url}#{self.args.api_name}",
                "description": self.args.description}

"""Debian's ``prometheus`` on 127.0.0.1 with a temporary config, and polling helpers for its HTTP API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusServer:
    """Scrapes ``targets`` every second. Stop it with ``close()`` (it ends only the process it started)."""

    def __init__(self, targets: list[str], rule_files: list[Path] = (), binary: str = "prometheus") -> None:
        executable = shutil.which(binary)
        if executable is None:
            raise RuntimeError("prometheus is not installed (Debian: apt-get install prometheus; `make test` does, as root).")
        self._dir = Path(tempfile.mkdtemp(prefix="raydio-prometheus-"))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": targets}]}],
        }
        (self._dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = open(self._dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in close()
        self._process = subprocess.Popen(
            [executable, f"--config.file={self._dir / 'prometheus.yml'}", f"--storage.tsdb.path={self._dir / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._client = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log()}")
            try:
                if self._client.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError("prometheus was not ready after 60 s")

    def log(self) -> str:
        return (self._dir / "prometheus.log").read_text(errors="replace")[-3000:]

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector as ``[{"metric": {...}, "value": float}]``."""
        body = self._client.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in body["data"]["result"]]

    def value(self, expr: str) -> float:
        """A scalar from an expression that yields at most one series (0 when it yields none)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} yielded {len(result)} series: {result}"
        return result[0]["value"] if result else 0.0

    def wait_until(self, expr: str, predicate: Callable[[float], bool], timeout_s: float = 60.0) -> float:
        """Poll ``value(expr)`` until ``predicate`` holds (Ray's agent batches its export); fail with the last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            last = self.value(expr)
            if predicate(last):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr} was {last} after {timeout_s:.0f} s")
            time.sleep(0.5)

    def targets_up(self) -> list[dict]:
        return self._client.get("/api/v1/targets").json()["data"]["activeTargets"]

    def close(self) -> None:
        self._client.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=15)
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

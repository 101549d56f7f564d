"""Start and stop what the benchmark measures, one at a time: uvicorn peers and raydio stacks in their own
processes, and the in-process limit of the model."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import yaml

from services.runner import REPO_ROOT, wait_ready


def measure_limit(model, batch_sizes: list[int], duration_s: float, threads: tuple[int, ...] = (1, 2)) -> dict[tuple[int, int], float]:
    """Sentences per second of ``model.embed`` for each (torch threads, batch size), in this process, no HTTP."""
    import torch

    from bench.loadgen import SENTENCES

    model.embed(SENTENCES[:2])  # first call allocates
    rates = {}
    before = torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count)
            for size in batch_sizes:
                texts = [SENTENCES[i % len(SENTENCES)] for i in range(size)]
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < duration_s:
                    model.embed(texts)
                    done += size
                rates[count, size] = done / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return rates


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM (raydio's CLI then shuts Serve and Ray down), then end whatever it started that outlived it."""
    if process.poll() is not None:
        return
    started = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    survivors = [p for p in started if p.is_running()]
    for child in survivors:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(survivors, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _wait_http(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode} before answering {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


@contextlib.contextmanager
def peer(kind: str, port: int, log_dir: Path, *extra: str) -> Iterator[str]:
    """Run ``python -m bench.peers KIND`` on ``port``; yields its base URL."""
    from bench.peers import READY_PATH

    url = f"http://127.0.0.1:{port}"
    with open(log_dir / f"peer-{kind}.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.peers", kind, "--port", str(port), *extra],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        try:
            _wait_http(url + READY_PATH, process, timeout_s=120)
            yield url
        finally:
            _stop(process, grace_s=10)


def serve_config(base: Path, port: int, serve_defaults: bool, coalesce: bool = True) -> dict:
    """``base`` (the config ``make run`` serves) on another port; with ``serve_defaults`` every deployment gets
    Serve's own queue defaults instead of raydio's (max_ongoing_requests 5, unbounded queues); without ``coalesce``
    every embedding request is its own handle call (``coalesce_calls: 0``)."""
    config = copy.deepcopy(yaml.safe_load(base.read_text()))
    config["http_options"]["port"] = port
    if not coalesce:
        for model in config["applications"][0]["args"]["models"]:
            if model["kind"] == "sentence-embedding":
                model["coalesce_calls"] = 0
    if serve_defaults:
        for app in config["applications"]:
            args = app["args"]
            deployments = [args[key] for key in ("ingress", "jobs") if key in args]
            deployments += [model.setdefault("deployment", {}) for model in args.get("models", [])]
            for deployment in deployments:
                deployment["max_ongoing_requests"] = 5
                deployment["max_queued_requests"] = -1
    return config


@contextlib.contextmanager
def raydio_stack(config: dict, name: str, work_dir: Path, env: dict[str, str]) -> Iterator[tuple[str, psutil.Process]]:
    """``python -m services.cli run`` (the path ``make run`` takes) with ``config``; yields URL and process."""
    path = work_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"http://127.0.0.1:{config['http_options']['port']}"
    with open(work_dir / f"{name}.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.cli", "run", "--config", str(path)],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env={**os.environ, **env})
        try:
            deadline = time.monotonic() + 300
            while process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    wait_ready(url, timeout_s=5)
                    break
            if process.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"raydio stack {name} did not become ready; see {work_dir / (name + '.log')}")
            yield url, psutil.Process(process.pid)
        finally:
            _stop(process, grace_s=60)


def batch_inputs(metrics_url: str, model: str) -> tuple[float, float]:
    """(inputs, forward passes) the ``model`` replicas have counted so far: the ``_sum`` and ``_count`` of
    ``ray_raydio_model_batch_inputs`` in the stack's Prometheus export (0, 0 before the first batch)."""
    text = httpx.get(metrics_url, timeout=10).text
    totals = {"_sum": 0.0, "_count": 0.0}
    for line in text.splitlines():
        if line.startswith("ray_raydio_model_batch_inputs_") and f'model="{model}"' in line:
            suffix = line.split("{")[0].removeprefix("ray_raydio_model_batch_inputs")
            if suffix in totals:
                totals[suffix] += float(line.rsplit(" ", 1)[1])
    return totals["_sum"], totals["_count"]


def replicas(root: psutil.Process, deployment: str) -> int:
    """Live replicas of a deployment among the processes under ``root`` (Ray names them by setproctitle)."""
    count = 0
    for process in root.children(recursive=True):
        with contextlib.suppress(psutil.Error, IndexError):
            if process.cmdline()[0].startswith(f"ray::ServeReplica:raydio:{deployment}"):
                count += 1
    return count

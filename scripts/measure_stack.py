"""Measure the local stack the way `make run` starts it: time to ready, memory, single-request latency.

    make measure            # prints a markdown table; docs/operations.md quotes its output

Run it with nothing else on 127.0.0.1:8000. Latency is the median of sequential requests (one at a time)
through the Serve proxy, the ingress replica and the model replica.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import httpx
import psutil

from services import runner
from services.config import get_settings, load_serve_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "serve" / "local.yaml"

REQUESTS = {
    "embedder (1 sentence)": ("/v1/embeddings", {"input": "The quick brown fox jumps over the lazy dog."}),
    "digits (8x8 JSON grid)": ("/v1/digits/classify", {"pixels": [[0, 0, 5, 13, 9, 1, 0, 0]] * 8}),
    "chat (16 tokens, greedy)": ("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 16, "temperature": 0}),
    "health/ready (3 handle calls)": ("/health/ready", None),
}


def pss_mib() -> tuple[float, float, int]:
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    pss = rss = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += info.pss
        rss += info.rss
    return pss / 2**20, rss / 2**20, len(processes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=30, help="sequential requests per model")
    args = parser.parse_args()
    settings = get_settings()
    started = time.monotonic()
    runner.prepare_models(settings, load_serve_config(CONFIG))
    runner.start_ray(settings)
    try:
        config = runner.deploy(CONFIG)
        url = runner.base_url(config)
        runner.wait_ready(url)
        ready_s = time.monotonic() - started
        time.sleep(5)  # let start-up settle before reading memory
        pss, rss, count = pss_mib()
        rows = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for name, (path, body) in REQUESTS.items():
                timings = []
                for i in range(args.requests + 3):
                    t0 = time.perf_counter()
                    response = client.post(path, json=body) if body else client.get(path)
                    elapsed = (time.perf_counter() - t0) * 1000
                    response.raise_for_status()
                    if i >= 3:  # the first calls warm caches and connections
                        timings.append(elapsed)
                timings.sort()
                rows.append(f"| {name} | {statistics.median(timings):.1f} | {timings[int(len(timings) * 0.9) - 1]:.1f} |")
    finally:
        runner.shutdown()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"config: {CONFIG.name}\n")
    print(f"| measure | value |\n|---|---|\n| start to ready (models cached) | {ready_s:.1f} s |\n"
          f"| memory, all processes started (PSS) | {pss / 1024:.2f} GiB |\n| memory (RSS, double-counts shared pages) | "
          f"{rss / 1024:.2f} GiB |\n| processes | {count} |\n")
    print("| sequential request through REST | p50 ms | p90 ms |\n|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()

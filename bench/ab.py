"""A/B of raydio stacks that differ in environment variables: embeddings at saturation and the no-op route.

    python -m bench.ab [--duration 10] [--concurrency 64] [--repeat 1] \\
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=1 RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=1" ""

Each argument is one stack's extra environment (``KEY=VALUE`` pairs; "" is the default). The stacks run one after
another (``--repeat`` times, interleaved, so a machine that slows down mid-run hurts both alike), each serving
``configs/serve/local.yaml`` on port 8304; the table prints the medians. Used for the numbers in docs/operations.md
that `make bench` does not measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench import loadgen, targets
from bench.__main__ import METRICS_PORT, _create_key
from services.runner import REPO_ROOT

PORT = 8304


async def measure(name: str, env: dict[str, str], work_dir: Path, secret: str, key_env: dict[str, str],
                  duration_s: float, concurrency: int) -> dict[str, float]:
    config = targets.serve_config(REPO_ROOT / "configs" / "serve" / "local.yaml", PORT, False)
    headers = {"Authorization": f"Bearer {secret}"}
    with targets.raydio_stack(config, name, work_dir, {**key_env, **env}) as (url, _):
        metrics = f"http://127.0.0.1:{METRICS_PORT}/metrics"
        before = targets.batch_inputs(metrics, "embedder")
        embed = await loadgen.drive("embeddings", url, loadgen.openai_embedding(), concurrency=concurrency,
                                    duration_s=duration_s, headers=headers)
        await asyncio.sleep(12)  # the metrics export lags a few seconds
        inputs, passes = (a - b for a, b in zip(targets.batch_inputs(metrics, "embedder"), before, strict=True))
        row = {"embeddings req/s": embed.throughput, "embeddings p50 ms": embed.percentile(50),
               "mean batch": inputs / passes if passes else float("nan"), "failed": float(embed.failed)}
        for level in (1, 16):
            noop = await loadgen.drive("no-op", url, loadgen.get("/health/live"), concurrency=level, duration_s=duration_s)
            row[f"no-op c={level} req/s"] = noop.throughput
            row[f"no-op c={level} p50 ms"] = noop.percentile(50)
    return row


def parse_env(text: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in text.split()]
    bad = [key for key, eq, _ in pairs if not eq or not key]
    if bad:
        raise SystemExit(f"Got {text!r}. Each stack is KEY=VALUE pairs separated by spaces.")
    return {key: value for key, _, value in pairs}


def table(labels: list[str], rows: list[dict[str, float]]) -> str:
    lines = ["| stack (extra environment) | " + " | ".join(rows[0]) + " |", "|---" * (len(rows[0]) + 1) + "|"]
    for label, row in zip(labels, rows, strict=True):
        lines.append(f"| {label or 'default'} | " + " | ".join(f"{value:,.2f}" for value in row.values()) + " |")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stacks", nargs="+", help='one stack\'s extra environment: "KEY=VALUE ..." ("" = default)')
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    envs = [parse_env(stack) for stack in args.stacks]
    work_dir = Path(tempfile.mkdtemp(prefix="raydio-ab-"))
    secret, key_env = _create_key(work_dir)
    runs: list[list[dict[str, float]]] = [[] for _ in envs]
    for round_ in range(args.repeat):
        for i, env in enumerate(envs):
            print(f"bench.ab: round {round_ + 1}/{args.repeat}, stack {args.stacks[i] or 'default'!r}", flush=True)
            runs[i].append(await measure(f"ab-{round_}-{i}", env, work_dir, secret, key_env, args.duration, args.concurrency))
    medians = [{key: statistics.median(run[key] for run in stack_runs) for key in stack_runs[0]} for stack_runs in runs]
    print(table(args.stacks, medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""`make bench`: one run, one machine, the same duration for every target.

1. the limit: the embedder in this process at its best batch size, no HTTP;
2. the peers: FastAPI + uvicorn calling the model per request, and gradio.Server with @app.api batching;
3. raydio through REST, with Serve's queue defaults and with raydio's configuration (the one `make run` serves);
4. overhead: raydio's /health/live against the same handler on plain uvicorn at several concurrencies;
5. a step to 4x the embedder's autoscaling target on raydio's configuration.

    python -m bench [--duration 10] [--concurrency 64] [--only-local]

Prints the tables, writes docs/benchmarks.md and the charts in docs/benchmarks/. Raydio stacks run one after
another on ports 8300-8303, peers on 8411-8413; all load goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench import chat, generation, loadgen, report, targets
from services.runner import REPO_ROOT

NOOP_LEVELS = (1, 4, 16, 64)
PLAIN = "plain uvicorn"
NAIVE = "FastAPI + uvicorn, model per request"
GRADIO = "gradio.Server, @app.api batch=True"
METRICS_PORT = 8390  # each stack's Ray metrics export (RAYDIO_METRICS_PORT), read for the batch sizes formed
METRICS_EXPORT_S = 12
PY_SPY = Path(sys.executable).with_name("py-spy")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A raydio stack to measure: ``local.yaml`` on its own port, with the changes named here."""

    name: str
    port: int
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    serve_defaults: bool = False  # Serve's own queue defaults instead of raydio's
    coalesce: bool = True  # embedding callers merge concurrent requests into fewer handle calls
    noop: bool = True  # also measure the no-op route (coalescing does not touch it)


def variants() -> list[Variant]:
    """The raydio stacks, run one after another; the last is the one ``make run`` serves."""
    serve_proxy = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}  # raydio puts HAProxy in front unless told not to
    return [
        Variant("raydio, Serve defaults", 8300, serve_proxy, serve_defaults=True),
        Variant("raydio, local.yaml, Serve's proxy", 8301, serve_proxy),
        Variant("raydio, local.yaml (HAProxy), no coalescing", 8303, coalesce=False, noop=False),
        Variant("raydio, local.yaml (HAProxy, the default)", 8302),
    ]


def _cpu_seconds(root: psutil.Process) -> dict[int, tuple[str, float]]:
    seen = {}
    for process in [psutil.Process(), root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, IndexError):
            title = process.cmdline()[0]
            # Ray retitles a worker with the method it runs ("ray::ServeReplica:raydio:embedder.method"): drop it.
            name = title.split(".")[0] if title.startswith("ray::") else process.name()
            if process.pid == os.getpid():
                name = "load generator (this process)"
            times = process.cpu_times()
            seen[process.pid] = (name, times.user + times.system)
    return seen


async def _with_cpu(root: psutil.Process, coroutine) -> tuple[loadgen.LoadResult, dict[str, float]]:
    """Run a measurement and report each process's share of a core over it (processes of one name summed)."""
    before, start = _cpu_seconds(root), time.perf_counter()
    result = await coroutine
    after, wall = _cpu_seconds(root), time.perf_counter() - start
    shares: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        shares[name] = shares.get(name, 0.0) + (seconds - before.get(pid, (name, 0.0))[1]) / wall * 100
    return result, shares


def _py_spy(root: psutil.Process, names: tuple[str, ...], seconds: int, out_dir: Path) -> list[tuple[str, Path, subprocess.Popen]]:
    """Sample the named processes for ``seconds`` (py-spy, non-blocking) into collapsed stacks, which speedscope
    or flamegraph.pl draw as flame graphs."""
    started = []
    for process in root.children(recursive=True):
        with contextlib.suppress(psutil.Error, IndexError):
            title = process.cmdline()[0]
            for name in names:
                if title.startswith(name):
                    label = name.rpartition(":")[2]
                    out = out_dir / f"profile-{label}-{process.pid}.txt"
                    started.append((f"{label} (pid {process.pid})", out, subprocess.Popen(
                        [str(PY_SPY), "record", "--nonblocking", "-f", "raw", "-d", str(seconds), "-r", "50", "-p",
                         str(process.pid), "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return started


def _sample_replicas(root: psutil.Process, stop: threading.Event, timeline: list, start: float) -> None:
    while not stop.is_set():
        timeline.append((time.perf_counter() - start, targets.replicas(root, "embedder")))
        stop.wait(0.5)


async def step_test(url: str, root: psutil.Process, headers: dict, target: int, duration_s: float) -> dict:
    """Load at the embedder's autoscaling target, then at 4x for twice as long; replicas sampled throughout."""
    timeline: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_replicas, args=(root, stop, timeline, time.perf_counter()), daemon=True)
    sampler.start()
    phases = []
    try:
        for name, concurrency, seconds in (("at target", target, duration_s), ("step to 4x", 4 * target, 2 * duration_s)):
            before = targets.replicas(root, "embedder")
            mark = len(timeline)
            result = await loadgen.drive(name, url, loadgen.openai_embedding(), concurrency=concurrency,
                                         duration_s=seconds, warmup_s=0, timeout_s=60, headers=headers)
            phases.append({"name": name, "result": result, "replicas_before": before,
                           "replicas_max": max([n for _, n in timeline[mark:]] or [before])})
    finally:
        stop.set()
        sampler.join()
    return {"phases": phases, "replica_timeline": timeline}


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    return (f"{platform.machine()}, {cpu}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"no GPU used; Python {platform.python_version()}, {platform.system()} {platform.release()}")


def _create_key(work_dir: Path) -> tuple[str, dict[str, str]]:
    """A fresh SQLite database for the stacks under test, with an inference key whose rate limit stays out of the way."""
    from services import runner
    from services.config import Settings
    from services.storage.db import session_scope
    from services.storage.repositories import KeyRepository

    env = {"RAYDIO_DATABASE_URL": f"sqlite:///{work_dir / 'bench.db'}"}
    os.environ.update(env)
    settings = runner.prepare_state(Settings())
    with session_scope(settings.database_url) as session:
        secret = KeyRepository.create(session, "bench", ["inference"], rate_limit_per_minute=10_000_000).secret
    return secret, {**env, "RAYDIO_JWT_SECRET": os.environ["RAYDIO_JWT_SECRET"], "RAYDIO_METRICS_PORT": str(METRICS_PORT)}


async def run(args: argparse.Namespace, charts_dir: Path) -> report.Measurements:
    from services.config import default_catalogue
    from services.models.embedder import EmbedderModel
    from services.models.sources import resolve

    m = report.Measurements()
    d, c = args.duration, args.concurrency
    work_dir = Path(tempfile.mkdtemp(prefix="raydio-bench-"))
    print(f"bench: work files in {work_dir}", flush=True)

    print("bench: 1/4 in-process limit", flush=True)
    model = EmbedderModel(resolve(default_catalogue()[0].source, None), os.environ.get("RAYDIO_DEVICE", "auto")).load()
    m.limit = targets.measure_limit(model, args.batch_sizes, min(d, 5.0))
    del model

    print("bench: 2/4 peers", flush=True)
    with targets.peer("naive", 8411, work_dir) as url:
        m.embed[NAIVE] = await loadgen.drive(NAIVE, url, loadgen.openai_embedding(), concurrency=c, duration_s=d)
    with targets.peer("gradio", 8412, work_dir, "--max-batch-size", str(args.max_batch_size)) as url:
        m.embed[GRADIO] = await loadgen.drive(GRADIO, url, loadgen.gradio_call("embed"), concurrency=c, duration_s=d)
    with targets.peer("noop", 8413, work_dir) as url:
        m.noop[PLAIN] = {level: await loadgen.drive(PLAIN, url, loadgen.get("/health/live"), concurrency=level, duration_s=d)
                         for level in NOOP_LEVELS}
    if args.only_local:
        return m

    print("bench: 3/4 raydio stacks, one after another", flush=True)
    secret, env = _create_key(work_dir)
    headers = {"Authorization": f"Bearer {secret}"}
    base = REPO_ROOT / "configs" / "serve" / "local.yaml"
    for variant in variants():
        name, port = variant.name, variant.port
        config = targets.serve_config(base, port, variant.serve_defaults, variant.coalesce)
        print(f"bench:   {name} on :{port}", flush=True)
        with targets.raydio_stack(config, f"stack-{port}", work_dir, {**env, **variant.env}) as (url, root):
            last = variant == variants()[-1]
            if last:
                print("bench: 4/4 step to 4x the autoscaling target", flush=True)
                embedder = next(m for m in config["applications"][0]["args"]["models"]
                                if m["name"] == "embedder")["deployment"]["autoscaling"]
                m.step = await step_test(url, root, headers, embedder["target_ongoing_requests"], d)
                m.step["config"] = embedder
                await asyncio.sleep(2)
            if variant.noop:
                m.noop[name] = {level: await loadgen.drive(name, url, loadgen.get("/health/live"), concurrency=level,
                                                           duration_s=d) for level in NOOP_LEVELS}
            metrics = f"http://127.0.0.1:{METRICS_PORT}/metrics"
            before = targets.batch_inputs(metrics, "embedder")
            m.embed[name], m.cpu[name] = await _with_cpu(root, loadgen.drive(
                name, url, loadgen.openai_embedding(), concurrency=c, duration_s=d, headers=headers))
            await asyncio.sleep(METRICS_EXPORT_S)  # Ray's agent exports what the replicas recorded every few seconds
            inputs, passes = (a - b for a, b in zip(targets.batch_inputs(metrics, "embedder"), before, strict=True))
            if passes:
                m.batches[name] = inputs / passes
            m.embed[name].name += f" ({targets.replicas(root, 'embedder')} embedder replica(s) at the end)"
            if last and args.profile:  # a second run under py-spy: the sampling costs CPU the measured run keeps
                for stale in charts_dir.glob("profile-*.txt"):  # an earlier run's, of processes long gone
                    stale.unlink()
                profiles = _py_spy(root, ("ray::ServeReplica:raydio:ingress", "ray::ServeReplica:raydio:embedder",
                                          "ray::ProxyActor"), int(d), charts_dir)
                await loadgen.drive(name, url, loadgen.openai_embedding(), concurrency=c, duration_s=d, headers=headers)
                for label, out, process in profiles:
                    process.wait(timeout=d + 30)
                    if out.exists():
                        m.profiles[label] = report.summarize_profile(out.read_text())
            if last and args.generation:
                print("bench:   chat over HTTP (1 vs 8 streams) and through the Gradio chat page (1 vs 4 users)", flush=True)
                m.generation += await chat.http_rows(url, headers)
                m.chat_users = await asyncio.to_thread(chat.gradio_users, url, headers)
    return m


def render(m: report.Measurements, args: argparse.Namespace, command: str, started: str,
           load: tuple[float, float] = (float("nan"), float("nan"))) -> str:
    (threads, size), limit = m.best_limit
    sections = [
        "# Benchmarks",
        f"Generated by `{command}` on {started} UTC. Machine: {machine()}. Every target ran alone, one after another, "
        f"each for {args.duration:g} s after a 2 s warm-up, driven by a closed-loop asyncio/aiohttp client in the same "
        "machine (it competes for the same two cores, the same way for every target). One sentence per request. "
        f"1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end (anything else running on the "
        "machine shows up there).",
        f"## Embeddings at saturation (concurrency {args.concurrency})\n\n{report.embed_table(m)}\n\nmean batch: sentences "
        "per forward pass of the embedder during the run (the change of `ray_raydio_model_batch_inputs` _sum over _count "
        "in the stack's metrics export); the limit's row is the batch it was measured at.",
        f"In-process limit by batch size and torch threads (best: batch {size}, {threads} thread(s), {limit:,.0f} "
        f"sentences/s), each for min(duration, 5 s):\n\n{report.limit_table(m)}",
        "## Overhead: a no-op route\n\n`GET /health/live` on raydio (Serve proxy → ingress replica → FastAPI, no "
        "model call; the auth middleware lets it through without a key) against the very same handler on plain "
        "uvicorn.\n\n" + report.noop_table(m, PLAIN),
    ]
    if m.generation:
        sections.append("## Text generation: 1 stream against 8 (continuous batching)\n\nSmolLM2-135M, at most 64 tokens "
                        "per stream, greedy. In process (no HTTP): EOS ignored so every stream runs 64 tokens, the old "
                        "one-stream loop for reference. Over HTTP: the last raydio stack above, `POST /v1/chat/completions` "
                        "streamed, tokens as its usage reports them (a stream may end at EOS). The targets: 8 streams ≥ 4x "
                        "one stream's tokens/s, TTFT p95 ≤ 1.5 s. docs/generation.md explains the engine and its "
                        "sizing.\n\n" + generation.table(m.generation))
    if m.chat_users:
        sections.append("## Gradio chat users at once\n\ngradio_client users of `/ui/chat/` on the last raydio stack, "
                        "64 tokens each, greedy: one alone, then four at once (the front-door target: the last of "
                        "the four within 2x the lone user).\n\n" + chat.users_table(m.chat_users))
    if m.step:
        sections.append("## Step to 4x the autoscaling target\n\nEmbedder autoscaling: "
                        f"`{m.step['config']}`.\n\n{report.step_table(m)}")
    if m.cpu:
        sections.append(f"## Where the CPU went during embeddings at saturation\n\n{report.cpu_table(m)}")
    if m.profiles:
        sections.append("## Profile of the last raydio stack at saturation (py-spy, 50 Hz, inclusive)\n\nSampled during a "
                        "second embeddings run after the measured one (the sampling costs CPU). Collapsed stacks "
                        "in `docs/benchmarks/profile-*.txt` (open them in speedscope.app).\n\n" + report.profile_table(m))
    notes = REPO_ROOT / "bench" / "NOTES.md"
    if notes.exists():  # the hand-written reading of the committed run: what limits raydio here, and the levers
        sections.append(notes.read_text().strip())
    sections.append("![embeddings](benchmarks/embeddings.png)\n\n![overhead](benchmarks/overhead.png)"
                    + ("\n\n![step](benchmarks/step.png)" if m.step else ""))
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each target is measured (after warm-up)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight for embeddings at saturation")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16, 32, 64])
    parser.add_argument("--max-batch-size", type=int, default=32, help="gradio.Server's max_batch_size")
    parser.add_argument("--only-local", action="store_true", help="limit and peers only, no Ray (the harness smoke test)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the py-spy profiles")
    parser.add_argument("--no-generation", dest="generation", action="store_false",
                        help="skip text generation: 1 vs 8 streams in process and over HTTP, Gradio chat users")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()[0]
    charts_dir = args.out.with_suffix("")
    charts_dir.mkdir(parents=True, exist_ok=True)
    m = asyncio.run(run(args, charts_dir))
    if args.generation:
        m.generation = generation.run(streams=8, tokens=64, repeats=2) + m.generation
    command = "make bench" if argv is None and len(sys.argv) == 1 else "python -m bench " + shlex.join(argv or sys.argv[1:])
    text = render(m, args, command, started, (load_before, os.getloadavg()[0]))
    args.out.write_text(text)
    report.charts(m, charts_dir, PLAIN)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

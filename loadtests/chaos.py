"""`make chaos`: SIGKILL each kind of process under load, then update the deployment under load; report what failed.

    python -m loadtests.chaos [--port 8100] [--out reports/chaos]

Starts its own Ray + Serve (configs/serve/local.yaml with one small replica per deployment, short job leases) on
127.0.0.1:<port> with a fresh SQLite database, runs a bounded load (embeddings, digits, chat streams, jobs) and, in
turn, SIGKILLs one replica of the ingress, the embedder, digits, chat (while streams are open) and the job runner,
then the Serve controller. For each fault it records the requests under way from the kill until the replacement
served, how each failed, and the seconds until the replacement served. Then it redeploys the config twice under
the same load: new batching values (user_config, in place) and a release bump (every replica replaced). At the end
every accepted job must have succeeded with each item recorded once. Writes report.json, requests.jsonl and
summary.md into --out and prints the table; exits 1 when a promise was broken.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from loadtests import faults

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO_ROOT / "configs" / "serve" / "local.yaml"

# target process → the request kinds it serves (None: all of them)
FAULTS: list[tuple[str, tuple[str, ...] | None]] = [
    ("ingress", None), ("embedder", ("embed",)), ("digits", ("digits",)), ("chat", ("chat",)), ("jobs", ("jobs",)),
    ("controller", None),
]

# after the scale-out: with a second replica serving, one replica's loss should cost only the requests it held
TWO_REPLICA_FAULTS: list[tuple[str, tuple[str, ...] | None]] = [("ingress", None), ("chat", ("chat",))]


def chaos_config(port: int) -> dict:
    """local.yaml with one small replica per deployment (a kill takes out the whole kind), quick job leases."""
    config = yaml.safe_load(BASE_CONFIG.read_text())
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["ingress"]["num_cpus"] = 0.1
    for model in args["models"]:
        model["deployment"]["num_cpus"] = 0.1
    args["jobs"].update({"num_cpus": 0.05, "lease_s": 5, "chunk_size": 2, "poll_interval_s": 0.2})
    # Replica counts through Serve's own overrides from the start: introducing an autoscaling override later changes
    # the application's code version (Serve hashes the overrides' autoscaling policies), replacing every replica.
    config["applications"][0]["deployments"] = [
        {"name": name, "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}
        for name in ["ingress", *(model["name"] for model in args["models"])]]
    return config


def updates(config: dict) -> list[tuple[str, dict]]:
    """The zero-downtime updates, in turn, each a new Serve config deployed as a RayService would:

    - every deployment but the runner to 2 replicas, through the ``deployments:`` overrides (Serve replaces a replica by
      stopping it before starting its successor, so one replica alone cannot be replaced without a gap);
    - new batching values, through the overrides' ``user_config`` (replicas reconfigured in place);
    - a release bump: an application env var, which (like any change under ``args``) gives the application a new
      code version, so Serve rolls every replica over to it, one at a time.
    """
    app = config["applications"][0]
    models = {model["name"]: model for model in app["args"]["models"]}
    scaled = copy.deepcopy(config)
    for override in scaled["applications"][0]["deployments"]:
        override["autoscaling_config"] = {"min_replicas": 2, "max_replicas": 2}
    batching = copy.deepcopy(scaled)
    for override in batching["applications"][0]["deployments"]:
        if "batching" in models.get(override["name"], {}):
            override["user_config"] = {"max_batch_size": models[override["name"]]["batching"]["max_batch_size"] // 2,
                                       "batch_wait_timeout_s": 0.01}
    release = copy.deepcopy(batching)
    release["applications"][0]["runtime_env"] = {"env_vars": {"RAYDIO_RELEASE": "chaos-2"}}
    return [("update: 1 → 2 replicas each", scaled), ("update: batching (user_config)", batching),
            ("update: release bump (replicas replaced)", release)]


async def _new_process(target: str, killed: list[int]) -> bool:
    processes = faults.controller_processes() if target == "controller" else faults.replica_processes(target)
    return any(p.pid not in killed for p in processes)


async def wait_recovered(load: faults.Load, client: httpx.AsyncClient, target: str, kinds, killed: list[int],
                         since: float, timeout_s: float = 180.0) -> float | None:
    """Seconds from the kill until a replacement process exists and has served: a request of the kind sent after
    the kill succeeded (the runner: /health/ready saw it answer; the controller: serve.status() answered)."""
    from ray import serve

    deadline = since + timeout_s
    while time.monotonic() < deadline:
        if await _new_process(target, killed):
            if target == "jobs":
                try:
                    if (await client.get("/health/ready")).status_code == 200:
                        return time.monotonic() - since
                except httpx.HTTPError:
                    pass
            elif target == "controller":
                try:
                    await asyncio.wait_for(asyncio.to_thread(serve.status), 10)
                    return time.monotonic() - since
                except Exception:  # noqa: BLE001 - not back yet
                    pass
            elif (served := load.first_success_after(since, kinds)) is not None:
                return served - since
        await asyncio.sleep(0.2)
    return None


async def wait_healthy(client: httpx.AsyncClient, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError("the stack did not become ready again")


async def wait_updated(timeout_s: float = 300.0) -> None:
    """Until the application runs on the new config (every deployment HEALTHY, none updating)."""
    from ray import serve

    await asyncio.sleep(2.0)  # the controller picks the new config up on its next loop
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = (await asyncio.to_thread(serve.status)).applications.get(faults.APP)
        if app is not None and str(app.status).endswith("RUNNING") and all(
                str(d.status).endswith("HEALTHY") and {str(state).split(".")[-1] for state in d.replica_states} == {"RUNNING"}
                for d in app.deployments.values()):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError("the update did not finish")


async def fault(load: faults.Load, client: httpx.AsyncClient, target: str, kinds, settle_s: float,
                label: str | None = None) -> dict:
    """One SIGKILL under the running load; the row for the table. Returns once the stack is ready again."""
    if target == "chat":  # kill it mid-stream
        deadline = time.monotonic() + 30
        while load.streams_open == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    streams_open = load.streams_open
    killed_at = time.monotonic()
    pids = faults.kill_one(target)
    label = label or f"SIGKILL {target}"
    print(f"chaos: {label} (pid {', '.join(map(str, pids))})", flush=True)
    recovered = await wait_recovered(load, client, target, kinds, pids, killed_at)
    await asyncio.sleep(settle_s)
    window = load.between(killed_at, time.monotonic(), kinds)
    row = {"event": label, "pids": pids, **faults.summarise(window),
           "recovered_s": None if recovered is None else round(recovered, 1),
           **({"streams_open_at_kill": streams_open} if target == "chat" else {})}
    await wait_healthy(client)
    await wait_updated()  # the replacement runs: the next fault starts from a whole stack
    await asyncio.sleep(settle_s)
    return row


async def campaign(url: str, headers: dict, config: dict, config_path: Path, database_url: str, *,
                   baseline_s: float, settle_s: float) -> dict:
    from services import runner

    load = faults.Load(url, headers)
    loader = asyncio.create_task(load.run())
    rows = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=15) as client:
        await asyncio.sleep(baseline_s)
        rows.append({"event": "baseline (no fault)", **faults.summarise(load.between(0, time.monotonic())),
                     "recovered_s": None})
        for target, kinds in FAULTS:
            rows.append(await fault(load, client, target, kinds, settle_s))
        for number, (name, new_config) in enumerate(updates(config)):
            config_path.write_text(yaml.safe_dump(new_config, sort_keys=False))
            started = time.monotonic()
            print(f"chaos: {name}", flush=True)
            await asyncio.to_thread(runner.deploy, config_path, None)
            await wait_updated()
            took = time.monotonic() - started
            await asyncio.sleep(settle_s)
            rows.append({"event": name, **faults.summarise(load.between(started, time.monotonic())),
                         "recovered_s": None, "took_s": round(took, 1)})
            if number == 0:  # two replicas each now: a kill leaves one serving
                for target, kinds in TWO_REPLICA_FAULTS:
                    rows.append(await fault(load, client, target, kinds, settle_s, label=f"SIGKILL {target} (1 of 2)"))
        load.stop()
        await loader
    await faults.wait_jobs_finished(database_url, load.jobs, timeout_s=300)
    audit = faults.job_audit(database_url, load.jobs)
    return {"rows": rows, "jobs": audit, "requests": [faults.as_dict(o) for o in load.outcomes],
            "totals": faults.summarise(load.outcomes)}


def table(report: dict) -> str:
    lines = ["| event | requests | failed | how they failed | slowest failure s | hung or truncated | replacement served after s |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for row in report["rows"]:
        how = ", ".join(f"{k}: {v}" for k, v in sorted(row["how"].items())) or "—"
        recovered = "—" if row.get("recovered_s") is None and "took_s" not in row else (
            f"{row['recovered_s']}" if row.get("recovered_s") is not None else f"(update took {row['took_s']})")
        if row["event"].startswith("SIGKILL") and row.get("recovered_s") is None:
            recovered = "never"
        lines.append(f"| {row['event']} | {row['requests']} | {row['failed']} | {how} | {row['slowest_failure_s']} | "
                     f"{row['broken']} | {recovered} |")
    jobs = report["jobs"]
    lines += ["", f"Jobs: {jobs['accepted']} accepted, statuses {jobs['statuses']}; lost {jobs['lost']}, items run twice "
                  f"{jobs['items_run_twice']}, items never run {jobs['items_never_run']}."]
    totals = report["totals"]
    lines += [f"All requests: {totals['requests']}, failed {totals['failed']}, hung or truncated {totals['broken']}."]
    return "\n".join(lines)


def verdict(report: dict) -> list[str]:
    problems = []
    for row in report["rows"]:
        if row["broken"]:
            problems.append(f"{row['event']}: {row['broken']} requests hung or ended truncated")
        if row["event"].startswith("SIGKILL") and row.get("recovered_s") is None:
            problems.append(f"{row['event']}: no replacement served")
        if row["event"].startswith("update") and row["failed"]:
            problems.append(f"{row['event']}: {row['failed']} requests failed during the update")
        if row["event"].startswith("baseline") and row["failed"]:
            problems.append(f"baseline: {row['failed']} requests failed without any fault")
    if report["jobs"]["lost"] or report["jobs"]["items_run_twice"]:
        problems.append(f"jobs: {report['jobs']['lost']} lost, {report['jobs']['items_run_twice']} items run twice")
    return problems


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("RAYDIO_CHAOS_PORT", "8100")))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "chaos")
    parser.add_argument("--baseline-s", type=float, default=15.0)
    parser.add_argument("--settle-s", type=float, default=5.0)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="raydio-chaos-"))
    config = chaos_config(args.port)
    config_path = work / "chaos.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    database_url = f"sqlite:///{work}/chaos.db"
    os.environ.update({"RAYDIO_DATABASE_URL": database_url, "RAYDIO_SERVE_CONFIG": str(config_path)})

    from services import runner
    from services.config import get_settings
    from services.storage.db import session_scope
    from services.storage.repositories import KeyRepository

    get_settings.cache_clear()
    settings = runner.prepare_state(get_settings())
    with session_scope(database_url) as session:  # a limit far above the load: the faults are measured, not the limiter
        key = KeyRepository.create(session, "chaos", ["admin", "inference"], rate_limit_per_minute=1_000_000).secret
    runner.prepare_models(settings, config)
    started = time.monotonic()
    try:
        for attempt in range(3):  # on a busy machine Ray's node can time out while starting; it is only started again
            try:
                runner.start_ray(settings, metrics_port=_free_port())
                break
            except Exception as exc:  # noqa: BLE001 - retried, then raised
                if attempt == 2:
                    raise
                print(f"chaos: Ray did not start ({exc}); trying again", flush=True)
                runner.shutdown()
        runner.deploy(config_path, http_port=args.port)
        url = runner.base_url(config)
        print(f"chaos: ready in {runner.wait_ready(url, timeout_s=300):.0f}s at {url}; config {config_path}", flush=True)
        report = asyncio.run(campaign(url, {"Authorization": f"Bearer {key}"}, config, config_path, database_url,
                                      baseline_s=args.baseline_s, settle_s=args.settle_s))
    finally:
        runner.shutdown()
    report["command"] = "make chaos"
    report["duration_s"] = round(time.monotonic() - started)
    report["problems"] = verdict(report)
    args.out.mkdir(parents=True, exist_ok=True)
    requests = report.pop("requests")
    (args.out / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    text = table(report)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)
    for problem in report["problems"]:
        print(f"chaos: BROKEN PROMISE: {problem}", file=sys.stderr)
    print(f"chaos: {'OK' if not report['problems'] else 'FAILED'} in {report['duration_s']}s; report in {args.out}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

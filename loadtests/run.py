"""`make loadtest`: Locust headless against a running raydio, then charts and the objectives check.

    RAYDIO_URL=http://127.0.0.1:8000 RAYDIO_API_KEY=rdk_... LOADTEST_SHAPE=steps python -m loadtests.run

Without RAYDIO_API_KEY a key named "loadtest" is created in the database `make run` uses (its rate limit is
raised so the load test measures the models, not the limiter). Writes report.html, locust_*.csv,
latency.png, throughput.png and summary.md into LOADTEST_OUT (reports/loadtest); exits 1 when an objective
in loadtests/objectives.yaml is missed, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from loadtests import shapes

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent


@dataclass
class Verdict:
    scenario: str
    requests: int
    p95_ms: float | None
    error_rate: float | None
    objective: dict
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_objectives(stats_csv: Path, objectives: dict[str, dict]) -> list[Verdict]:
    """Compare Locust's final per-name statistics with the objectives; a scenario with no requests fails."""
    rows = {}
    with open(stats_csv, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["Name"], []).append(row)
    verdicts = []
    for scenario, objective in objectives.items():
        found = rows.get(scenario, [])
        requests = sum(int(r["Request Count"]) for r in found)
        if not requests:
            verdicts.append(Verdict(scenario, 0, None, None, objective, ["no requests were recorded"]))
            continue
        failures = sum(int(r["Failure Count"]) for r in found)
        p95 = max(float(r["95%"]) for r in found if r["95%"] not in ("", "N/A"))
        rate = failures / requests
        problems = []
        if p95 > objective["p95_ms"]:
            problems.append(f"p95 {p95:.0f} ms > {objective['p95_ms']} ms")
        if rate > objective["max_error_rate"]:
            problems.append(f"error rate {rate:.2%} > {objective['max_error_rate']:.2%}")
        verdicts.append(Verdict(scenario, requests, p95, rate, objective, problems))
    return verdicts


def verdict_table(verdicts: list[Verdict]) -> str:
    lines = ["| scenario | requests | p95 ms (objective) | error rate (objective) | verdict |", "|---|---|---|---|---|"]
    for v in verdicts:
        p95 = "—" if v.p95_ms is None else f"{v.p95_ms:.0f}"
        rate = "—" if v.error_rate is None else f"{v.error_rate:.2%}"
        lines.append(f"| {v.scenario} | {v.requests} | {p95} (≤ {v.objective['p95_ms']}) | {rate} "
                     f"(≤ {v.objective['max_error_rate']:.0%}) | {'met' if v.ok else 'MISSED: ' + '; '.join(v.problems)} |")
    return "\n".join(lines)


def charts(history_csv: Path, out_dir: Path) -> list[Path]:
    """Latency percentiles and throughput over time, from Locust's aggregated history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    if not rows:
        return []
    t0 = int(rows[0]["Timestamp"])
    t = [int(r["Timestamp"]) - t0 for r in rows]

    def series(column: str) -> list[float]:
        return [float(r[column]) if r[column] not in ("", "N/A") else float("nan") for r in rows]

    written = []
    fig, ax = plt.subplots(figsize=(10, 4))
    for column in ("50%", "95%", "99%"):
        ax.plot(t, series(column), label=f"p{column[:-1]}")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("response time, ms (all requests, last 10 s)")
    ax.legend()
    ax.set_title("Latency percentiles over time")
    fig.tight_layout()
    written.append(out_dir / "latency.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, series("Requests/s"), label="requests/s")
    ax.plot(t, series("Failures/s"), label="failures/s", color="tab:red")
    users = ax.twinx()
    users.plot(t, series("User Count"), label="users", color="gray", linestyle="--")
    users.set_ylabel("users")
    ax.set_xlabel("seconds")
    ax.set_ylabel("per second")
    ax.legend(loc="upper left")
    ax.set_title("Throughput over time")
    fig.tight_layout()
    written.append(out_dir / "throughput.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def ensure_key(env: dict[str, str]) -> str:
    """RAYDIO_API_KEY, or a new key created with the CLI in the database `make run` uses."""
    if env.get("RAYDIO_API_KEY"):
        return env["RAYDIO_API_KEY"]
    out = subprocess.run([sys.executable, "-m", "services.cli", "create-key", "--name", "loadtest", "--rate-limit",
                          "1000000"], capture_output=True, text=True, check=True, cwd=REPO_ROOT, env=env).stdout
    match = re.search(r"\b(rdk_\S+)", out)
    if not match:
        raise RuntimeError(f"create-key printed no key: {out!r}")
    print("loadtest: created API key 'loadtest' (rate limit 1,000,000/min)", flush=True)
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default=os.environ.get("LOADTEST_SHAPE", "steps"), choices=list(shapes.SHAPES))
    parser.add_argument("--time-scale", type=float, default=float(os.environ.get("LOADTEST_TIME_SCALE", "1")),
                        help="multiply every stage's length (0.2 for a quick look)")
    parser.add_argument("--url", default=os.environ.get("RAYDIO_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("LOADTEST_OUT", REPO_ROOT / "reports" / "loadtest")))
    parser.add_argument("--objectives", type=Path, default=HERE / "objectives.yaml")
    args = parser.parse_args(argv)
    objectives = yaml.safe_load(args.objectives.read_text())
    try:
        httpx.get(f"{args.url}/health/ready", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"loadtest: {args.url} is not ready ({exc}). Start the stack with `make run` first.", file=sys.stderr)
        return 2
    env = {**os.environ, "LOADTEST_SHAPE": args.shape, "LOADTEST_TIME_SCALE": str(args.time_scale)}
    env["RAYDIO_API_KEY"] = ensure_key(env)
    args.out.mkdir(parents=True, exist_ok=True)
    duration = shapes.duration_s(args.shape, args.time_scale)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    print(f"loadtest: shape {args.shape}, {duration:.0f} s against {args.url}; reports in {args.out}", flush=True)
    command = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "--host", args.url,
               "--csv", str(args.out / "locust"), "--csv-full-history", "--html", str(args.out / "report.html"),
               "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "30"]
    try:
        # Locust ends when the shape does; the timeout is the hard bound should it not.
        subprocess.run(command, cwd=REPO_ROOT, env=env, timeout=duration + 120, check=False)
    except subprocess.TimeoutExpired:
        print("loadtest: Locust ran past its bound and was stopped", file=sys.stderr)
        return 2
    verdicts = check_objectives(args.out / "locust_stats.csv", objectives)
    written = charts(args.out / "locust_stats_history.csv", args.out)
    table = verdict_table(verdicts)
    (args.out / "summary.md").write_text(
        f"# Load test\n\n`make loadtest` (shape `{args.shape}`, time scale {args.time_scale:g}, {duration:.0f} s) against "
        f"{args.url} on {started} UTC. Full report: [report.html](report.html); CSV files: `locust_*.csv`.\n\n"
        f"{table}\n\n" + "\n\n".join(f"![{p.stem}]({p.name})" for p in written) + "\n")
    print(table)
    missed = [v.scenario for v in verdicts if not v.ok]
    print(f"loadtest: {'objectives MISSED: ' + ', '.join(missed) if missed else 'all objectives met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

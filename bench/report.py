"""The benchmark's table, its markdown page and its charts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import LoadResult
from services.runner import REPO_ROOT


@dataclass
class Measurements:
    limit: dict[tuple[int, int], float] = field(default_factory=dict)  # (torch threads, batch size) -> sentences/s
    embed: dict[str, LoadResult] = field(default_factory=dict)  # target -> embeddings at saturation
    noop: dict[str, dict[int, LoadResult]] = field(default_factory=dict)  # target -> concurrency -> result
    step: dict | None = None  # the 4x step on the autoscaled embedder
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> process -> % of one core
    profiles: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # process -> (share, frame)
    generation: list = field(default_factory=list)  # bench.generation.Row: in process, then over HTTP (bench/chat.py)
    batches: dict[str, float] = field(default_factory=dict)  # target -> mean inputs per embedder forward pass
    chat_users: dict | None = None  # gradio_client users of /ui/chat/: one alone, then several at once

    @property
    def best_limit(self) -> tuple[tuple[int, int], float]:
        return max(self.limit.items(), key=lambda item: item[1])


def _fmt(value: float, digits: int = 1) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def embed_table(m: Measurements) -> str:
    (threads, size), limit = m.best_limit
    peers = {name: r.throughput for name, r in m.embed.items() if not name.startswith("raydio")}
    head = ["target", "req/s", "p50 ms", "p99 ms", "failed", "mean batch", "÷ limit", *(f"÷ {p}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append(f"| limit: in-process, batch {size}, {threads} torch thread(s), no HTTP | {_fmt(limit)} | | | | {size} | 1.00 |"
                 + " |" * len(peers))
    for name, r in m.embed.items():
        ratios = [f"{r.throughput / v:.2f}" if v else "—" for v in peers.values()] if name.startswith("raydio") else [""] * len(peers)
        batch = _fmt(m.batches[name]) if name in m.batches else ""
        lines.append(f"| {name} | {_fmt(r.throughput)} | {_fmt(r.percentile(50))} | {_fmt(r.percentile(99))} | {r.failed} | "
                     f"{batch} | {r.throughput / limit:.2f} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def limit_table(m: Measurements) -> str:
    threads = sorted({t for t, _ in m.limit})
    sizes = sorted({s for _, s in m.limit})
    lines = ["| batch size | " + " | ".join(f"{t} torch thread(s)" for t in threads) + " |", "|---|" + "---|" * len(threads)]
    lines += [f"| {s} | " + " | ".join(_fmt(m.limit.get((t, s))) for t in threads) + " |" for s in sizes]
    return "\n".join(lines)


def profile_table(m: Measurements, top: int = 8) -> str:
    if not m.profiles:
        return ""
    lines = ["| process | share of samples | frame (inclusive) |", "|---|---|---|"]
    for process, frames in m.profiles.items():
        lines += [f"| {process} | {share:.0%} | `{frame}` |" for share, frame in frames[:top]]
    return "\n".join(lines)


def _frame(frame: str) -> str:
    """"Class.method (/long/path/site-packages/pkg/mod.py:123)" -> "Class.method (pkg/mod.py)"."""
    where = (frame.rpartition(":")[0] if frame.endswith(")") else frame).replace(f"{REPO_ROOT}/", "")
    return where.replace(where[where.find("(") + 1:where.find("site-packages/") + 14], "") + ")" if "site-packages/" in where \
        else where + (")" if "(" in where else "")


def summarize_profile(raw: str) -> list[tuple[float, str]]:
    """Inclusive share of samples per frame (function and file) from py-spy's collapsed-stack ("raw") output."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        frames = {_frame(frame) for frame in stack.split(";") if frame}
        for frame in frames:
            counts[frame] = counts.get(frame, 0) + int(n)
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return [(n / total, frame.replace("|", "/")) for frame, n in ranked if "threading.py" not in frame] if total else []


def noop_table(m: Measurements, baseline: str) -> str:
    base = m.noop[baseline]
    lines = ["| target | concurrency | req/s | p50 ms | p99 ms | failed | overhead p50 ms | ÷ plain uvicorn req/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, levels in m.noop.items():
        for c, r in levels.items():
            overhead = r.percentile(50) - base[c].percentile(50) if name != baseline else float("nan")
            ratio = f"{r.throughput / base[c].throughput:.2f}" if name != baseline and base[c].throughput else ""
            lines.append(f"| {name} | {c} | {_fmt(r.throughput)} | {_fmt(r.percentile(50), 2)} | {_fmt(r.percentile(99), 2)} | "
                         f"{r.failed} | {_fmt(overhead, 2)} | {ratio} |")
    return "\n".join(lines)


def cpu_table(m: Measurements) -> str:
    if not m.cpu:
        return ""
    lines = ["| target | process | % of one core |", "|---|---|---|"]
    for target, processes in m.cpu.items():
        for process, share in sorted(processes.items(), key=lambda item: -item[1]):
            if share >= 1:
                lines.append(f"| {target} | `{process}` | {share:.0f} |")
    return "\n".join(lines)


def step_table(m: Measurements) -> str:
    if not m.step:
        return ""
    s = m.step
    lines = ["| phase | concurrency | req/s | p50 ms | p99 ms | statuses | failures other than 429/503 with Retry-After | "
             "embedder replicas |",
             "|---|---|---|---|---|---|---|---|"]
    for phase in s["phases"]:
        r: LoadResult = phase["result"]
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items(), key=str))
        lines.append(f"| {phase['name']} | {r.concurrency} | {_fmt(r.throughput)} | {_fmt(r.percentile(50))} | "
                     f"{_fmt(r.percentile(99))} | {statuses} | {r.unexpected_failures} | "
                     f"{phase['replicas_before']} → max {phase['replicas_max']} |")
    return "\n".join(lines)


def charts(m: Measurements, out_dir: Path, baseline: str) -> list[Path]:
    """Throughput and latency of every embeddings target, overhead by concurrency, and the step over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    names = ["limit (in-process)", *m.embed]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(names, [m.best_limit[1], *(r.throughput for r in m.embed.values())], color="tab:blue")
    left.set_xlabel("sentences per second (one sentence per request)")
    left.set_title("Embeddings at saturation")
    left.invert_yaxis()
    results = list(m.embed.values())
    y = range(len(results))
    right.barh([i - 0.2 for i in y], [r.percentile(50) for r in results], height=0.4, label="p50")
    right.barh([i + 0.2 for i in y], [r.percentile(99) for r in results], height=0.4, label="p99")
    right.set_yticks(list(y), list(m.embed))
    right.invert_yaxis()
    right.set_xlabel("latency, ms")
    right.legend()
    fig.tight_layout()
    written.append(out_dir / "embeddings.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, levels in m.noop.items():
        cs = list(levels)
        left.plot(cs, [levels[c].percentile(50) for c in cs], marker="o", label=name)
        right.plot(cs, [levels[c].throughput for c in cs], marker="o", label=name)
    for ax, label in ((left, "p50 latency, ms"), (right, "requests per second")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    left.set_title(f"No-op route (/health/live) vs {baseline}")
    fig.tight_layout()
    written.append(out_dir / "overhead.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    if m.step:
        fig, ax = plt.subplots(figsize=(10, 4))
        offset = 0.0
        for phase in m.step["phases"]:
            r: LoadResult = phase["result"]
            seconds = [offset + t for t in r.completions_at_s]
            bins = max(int(r.duration_s), 1)
            ax.hist(seconds, bins=bins, range=(offset, offset + r.duration_s), alpha=0.7,
                    label=f"{phase['name']} (c={r.concurrency})")
            offset += r.duration_s
        times, counts = zip(*m.step["replica_timeline"], strict=True) if m.step["replica_timeline"] else ((), ())
        twin = ax.twinx()
        twin.step(times, counts, where="post", color="black", label="embedder replicas")
        twin.set_ylabel("embedder replicas")
        twin.set_ylim(0, max(counts or (1,)) + 1)
        ax.set_xlabel("seconds")
        ax.set_ylabel("answers per second")
        ax.set_title("Step to 4x the embedder's autoscaling target")
        ax.legend(loc="upper left")
        fig.tight_layout()
        written.append(out_dir / "step.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written

"""The benchmark harness on a tiny budget: real model, real uvicorn peers, real load generator; no Ray.

Speed is the benchmark's business (`make bench`); these tests check that the harness measures and reports
what it claims: counted answers, failures kept apart, ratios computed from the measurements, files written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from bench import loadgen, report, targets
from bench.__main__ import GRADIO, NAIVE, PLAIN, main, render
from services.config import load_serve_config
from services.runner import REPO_ROOT


def test_load_generator_refuses_other_hosts():
    with pytest.raises(ValueError, match="127.0.0.1"):
        asyncio.run(loadgen.drive("x", "http://example.com", loadgen.get("/"), concurrency=1, duration_s=0.1))


def test_load_generator_counts_answers_and_keeps_failures_apart(tmp_path):
    with targets.peer("noop", 8491, tmp_path) as url:
        ok = asyncio.run(loadgen.drive("ok", url, loadgen.get("/health/live"), concurrency=4, duration_s=0.5,
                                       warmup_s=0, max_requests=200))
        missing = asyncio.run(loadgen.drive("404", url, loadgen.get("/nowhere"), concurrency=2, duration_s=0.3,
                                            warmup_s=0))
    assert sum(ok.statuses.values()) == 200 and ok.statuses[200] == ok.ok == len(ok.latencies_ms) > 0
    assert ok.failed == 0 and ok.throughput > 0 and ok.percentile(50) <= ok.percentile(99)
    assert missing.ok == 0 and missing.failed == missing.statuses[404] > 0 and missing.unexpected_failures == missing.failed


def test_harness_end_to_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "benchmarks.md"
    assert main(["--duration", "0.5", "--concurrency", "4", "--batch-sizes", "1,4", "--only-local", "--no-generation",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "`python -m bench --duration 0.5" in text and " cores, " in text
    for name in (NAIVE, GRADIO, PLAIN, "limit: in-process, batch", "| 4 | "):
        assert name in text
    for chart in ("embeddings.png", "overhead.png"):
        assert (tmp_path / "benchmarks" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_come_from_the_measurements():
    m = report.Measurements(limit={(1, 1): 50.0, (1, 32): 400.0, (2, 32): 300.0})
    for name, ok in ((NAIVE, 50), (GRADIO, 100), ("raydio, x", 200)):
        result = loadgen.LoadResult(name, 64, 1.0, latencies_ms=[10.0] * ok)
        result.statuses[200] = ok
        m.embed[name] = result
    m.batches["raydio, x"] = 7.25
    m.embed["raydio, x"].statuses[503] = 3
    m.embed["raydio, x"].rejections_without_retry_after = 1
    row = next(line for line in report.embed_table(m).splitlines() if line.startswith("| raydio, x"))
    assert row.split(" | ")[1:] == ["200.0", "10.0", "10.0", "3", "7.2", "0.50", "4.00", "2.00 |"]
    assert m.embed["raydio, x"].unexpected_failures == 1  # the 503 without Retry-After


def test_generation_rows_are_compared_with_one_stream_of_their_own_kind():
    from bench import chat, generation

    def row(name: str, streams: int, tokens: int) -> generation.Row:
        return generation.Row(name, streams, tokens=tokens, seconds=10.0, ttft_s=[0.5] * streams)

    rows = [row("naive loop, 1 stream", 1, 50), row("engine, 1 stream", 1, 100), row("engine, 8 streams", 8, 400),
            row("HTTP /v1/chat/completions, 1 stream", 1, 80), row("HTTP /v1/chat/completions, 8 streams", 8, 240)]
    ratios = {line.split(" | ")[0][2:]: line.split(" | ")[-1].rstrip(" |") for line in generation.table(rows).splitlines()[2:]}
    assert ratios == {"naive loop, 1 stream": "0.50", "engine, 1 stream": "—", "engine, 8 streams": "4.00",
                      "HTTP /v1/chat/completions, 1 stream": "—", "HTTP /v1/chat/completions, 8 streams": "3.00"}
    users = chat.users_table({"users": 4, "alone_s": 10.0, "each_s": [11.0, 12.0, 14.0, 15.0], "last_s": 15.5})
    assert users.splitlines()[-1] == "| 4 | 10.0 | 11.0 12.0 14.0 15.0 | 15.5 | 1.55 |"


def test_serve_defaults_config_is_valid_and_differs_only_in_queues_and_port(tmp_path):
    base = REPO_ROOT / "configs" / "serve" / "local.yaml"
    tuned, defaults = targets.serve_config(base, 8301, False), targets.serve_config(base, 8300, True)
    for config in (tuned, defaults):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        load_serve_config(path)
    assert tuned["http_options"]["port"] == 8301 and defaults["http_options"]["port"] == 8300
    args = defaults["applications"][0]["args"]
    deployments = [args["ingress"], args["jobs"], *(m["deployment"] for m in args["models"])]
    assert len(deployments) == 5 and {d["max_ongoing_requests"] for d in deployments} == {5}
    assert tuned["applications"][0]["args"]["models"][0]["deployment"]["max_ongoing_requests"] == 64
    plain = targets.serve_config(base, 8303, False, coalesce=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(plain))
    load_serve_config(tmp_path / "c.yaml")
    assert {m["name"]: m.get("coalesce_calls") for m in plain["applications"][0]["args"]["models"]} == {
        "embedder": 0, "digits": None, "chat": None}
    assert "coalesce_calls" not in str(tuned)  # the default (2) from services.config


def test_render_names_the_command_and_the_machine():
    m = report.Measurements(limit={(1, 8): 100.0})
    m.noop[PLAIN] = {1: loadgen.LoadResult(PLAIN, 1, 1.0, latencies_ms=[0.5])}
    m.noop[PLAIN][1].statuses[200] = 1

    class Args:
        duration, concurrency = 1.0, 4

    text = render(m, Args, "make bench", "2026-01-01 00:00")
    assert "`make bench`" in text and "cores" in text and Path("benchmarks/overhead.png").name in text


def test_profile_summary_counts_each_frame_once_per_stack():
    raw = ("main (app.py:1);handle (/x/site-packages/ray/serve/replica.py:10);embed (services/models/embedder.py:5) 30\n"
           "main (app.py:1);handle (/x/site-packages/ray/serve/replica.py:12);handle (/x/site-packages/ray/serve/replica.py:10) 10\n")
    shares = dict((frame, share) for share, frame in report.summarize_profile(raw))
    assert shares == {"main (app.py)": 1.0, "handle (ray/serve/replica.py)": 1.0, "embed (services/models/embedder.py)": 0.75}


def test_ab_reads_each_stacks_environment_and_prints_one_row_per_stack():
    from bench import ab

    assert ab.parse_env("A=1 B=x=y") == {"A": "1", "B": "x=y"} and ab.parse_env("") == {}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        ab.parse_env("A=1 oops")
    text = ab.table(["", "A=1"], [{"req/s": 10.0, "p50 ms": 2.5}, {"req/s": 1234.5, "p50 ms": 1.0}])
    assert text.splitlines()[2:] == ["| default | 10.00 | 2.50 |", "| A=1 | 1,234.50 | 1.00 |"]

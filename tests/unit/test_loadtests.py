"""The load test's own logic: shapes by name, the objectives check on Locust's CSV format, the charts.
Locust itself is not imported here (it monkey-patches the process); `make loadtest` runs it."""

from __future__ import annotations

import csv

import pytest
import yaml

from loadtests import run, shapes

STATS_HEADER = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
                "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s",
                "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]


def write_stats(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(STATS_HEADER)
        for kind, name, count, failures, p95 in rows:
            writer.writerow([kind, name, count, failures, 10, 12, 1, 900, 100, 5.0, 0.0,
                             10, 11, 12, 13, 20, p95, 300, 400, 500, 600, 900])


def test_every_shape_ends_and_steps_through_its_stages():
    for name in shapes.SHAPES:
        total = shapes.duration_s(name)
        assert shapes.stage_at(name, 0) == shapes.SHAPES[name][0][1:]
        assert shapes.stage_at(name, total - 0.01) == shapes.SHAPES[name][-1][1:]
        assert shapes.stage_at(name, total) is None
    assert shapes.stage_at("steps", 20) == (6, 3)  # second stage starts at 15 s
    assert shapes.stage_at("steps", 2, scale=0.1) == (6, 3)  # ... or at 1.5 s at a tenth of the time
    assert shapes.duration_s("spike", 0.5) == shapes.duration_s("spike") / 2


def test_unknown_shape_is_refused_with_the_names(monkeypatch):
    monkeypatch.setenv("LOADTEST_SHAPE", "ramp")
    with pytest.raises(ValueError, match="warmup, steps, spike"):
        shapes.selected()


def test_objectives_met_missed_and_missing(tmp_path):
    stats = tmp_path / "locust_stats.csv"
    write_stats(stats, [("POST", "embeddings", 1000, 5, 120), ("POST", "digits", 500, 0, 900),
                        ("POST", "chat", 100, 20, 100), ("", "Aggregated", 1600, 25, 400)])
    objectives = {"embeddings": {"p95_ms": 500, "max_error_rate": 0.01}, "digits": {"p95_ms": 500, "max_error_rate": 0.01},
                  "chat": {"p95_ms": 500, "max_error_rate": 0.05}, "jobs": {"p95_ms": 500, "max_error_rate": 0.01}}
    verdicts = {v.scenario: v for v in run.check_objectives(stats, objectives)}
    assert verdicts["embeddings"].ok and verdicts["embeddings"].error_rate == 0.005
    assert verdicts["digits"].problems == ["p95 900 ms > 500 ms"]
    assert verdicts["chat"].problems == ["error rate 20.00% > 5.00%"]
    assert verdicts["jobs"].problems == ["no requests were recorded"]
    table = run.verdict_table(list(verdicts.values()))
    assert table.count("MISSED") == 3 and "| embeddings | 1000 | 120 (≤ 500) | 0.50% (≤ 1%) | met |" in table


def test_committed_objectives_name_scenarios_the_locustfile_records():
    objectives = yaml.safe_load((run.HERE / "objectives.yaml").read_text())
    source = (run.HERE / "locustfile.py").read_text()
    for scenario, objective in objectives.items():
        assert f'"{scenario}"' in source, scenario
        assert set(objective) == {"p95_ms", "max_error_rate"}


def test_charts_from_locust_history(tmp_path):
    history = tmp_path / "locust_stats_history.csv"
    with open(history, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "95%", "99%"])
        for t in range(10):
            writer.writerow([1_700_000_000 + t, t, "", "Aggregated", 10 * t, 0, 20, 40 + t, 80 + t])
            writer.writerow([1_700_000_000 + t, t, "POST", "embeddings", 5 * t, 0, 20, 40, 80])
    written = run.charts(history, tmp_path)
    assert [p.name for p in written] == ["latency.png", "throughput.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)

"""When a system tool the tests use is missing: its tests are skipped, named, outside CI and fail in CI.

Nothing is uninstalled: each check looks at a PATH that lacks the tools (an empty folder) in this process or
in a subprocess — pytest itself, scripts/test-deps.sh, and the Makefile's promtool step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import TOOLS, decide, in_ci

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash")


@pytest.mark.parametrize(("available", "ci", "verdict"), [
    (True, False, "run"), (True, True, "run"), (False, False, "skip"), (False, True, "fail"),
])
def test_a_missing_tool_skips_outside_ci_and_fails_in_ci(available, ci, verdict):
    assert decide(available, ci) == verdict


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("True", True), ("1", True), ("yes", True), ("", False), ("false", False), ("0", False),
])
def test_ci_is_read_from_the_ci_variable(value, expected):
    assert in_ci({"CI": value}) is expected
    assert in_ci({}) is False


def test_tools_are_looked_up_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RAYDIO_CHROMIUM", raising=False)
    assert not any(TOOLS[name].available() for name in ("promtool", "prometheus", "chromium", "kubectl"))
    found = tmp_path / "promtool"
    found.write_text("#!/bin/sh\nexit 0\n")
    found.chmod(0o755)
    assert TOOLS["promtool"].available()
    assert not TOOLS["prometheus"].available()


def test_chromium_can_be_named_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = tmp_path / "elsewhere" / "chrome"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv("RAYDIO_CHROMIUM", str(binary))
    assert not TOOLS["chromium"].available(), "a file that is not executable is not a browser"
    binary.chmod(0o755)
    assert TOOLS["chromium"].available()


def test_postgres_is_a_given_url_or_a_server_root_can_start(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RAYDIO_TEST_POSTGRES_URL", raising=False)
    assert not TOOLS["postgres"].available()
    monkeypatch.setenv("RAYDIO_TEST_POSTGRES_URL", "postgresql+psycopg://u:p@db.example/test")
    assert TOOLS["postgres"].available()


def test_every_tool_message_names_the_tool_and_how_to_install_it():
    for tool in TOOLS.values():
        message = tool.missing_message()
        assert message.startswith(f"{tool.name} not found")
        assert "install" in message or "RAYDIO_TEST_POSTGRES_URL" in message


MARKED = '''
import pytest

@pytest.mark.requires_promtool
def test_one():
    pass

@pytest.mark.requires_promtool
@pytest.mark.parametrize("n", [1, 2])
def test_two(n):
    pass

def test_without_tools():
    pass
'''


def _pytest_without_tools(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_marked.py").write_text(MARKED)
    (tmp_path / "empty").mkdir(exist_ok=True)
    # Neither CI nor the PostgreSQL URL that scripts/test-deps.sh exports (make test, .ci/run) may leak in: this
    # subprocess stands for a machine with none of the tools.
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "RAYDIO_TEST_POSTGRES_URL")}
    env.update(PATH=str(tmp_path / "empty"), PYTHONPATH=str(ROOT), **({"CI": "true"} if ci else {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.support.tools", "-p", "no:cacheprovider",
                           "--strict-markers", "-ra", "test_marked.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_pytest_skips_the_marked_tests_with_one_line_naming_the_tool(tmp_path):
    result = _pytest_without_tools(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped" in result.stdout
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, skipped
    assert skipped[0].startswith("SKIPPED [3]") and "promtool not found" in skipped[0]
    assert "apt-get install prometheus" in skipped[0]
    assert "test tools: missing promtool, prometheus, chromium, postgres, kubectl" in result.stdout


def test_pytest_fails_the_marked_tests_when_ci_is_true(tmp_path):
    result = _pytest_without_tools(tmp_path, ci=True)
    assert result.returncode == 1
    assert "1 passed, 3 errors" in result.stdout
    assert "CI=true: a missing tool is a failure" in result.stdout
    assert "skipped" not in result.stdout.splitlines()[-1]


def _test_deps(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(ROOT / "scripts" / "test-deps.sh")], env=env, capture_output=True, text=True,
                          timeout=120)


def test_test_deps_names_what_it_cannot_install_and_fails_only_in_ci(tmp_path):
    # An empty PATH: no tools and no apt-get, as for a user without root.
    result = _test_deps({"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # nothing to export: no PostgreSQL was started
    for name in ("promtool", "prometheus", "chromium", "postgres", "kubectl"):
        assert f"missing {name}, its tests are skipped" in result.stderr
    ci = _test_deps({"PATH": str(tmp_path), "HOME": str(tmp_path), "CI": "true"})
    assert ci.returncode == 1
    assert "CI=true: every tool is required" in ci.stderr


@pytest.mark.requires_promtool
@pytest.mark.requires_prometheus
@pytest.mark.requires_chromium
@pytest.mark.requires_kubectl
def test_test_deps_passes_in_ci_when_every_tool_is_there():
    env = {**os.environ, "CI": "true", "RAYDIO_TEST_DEPS_INSTALL": "0",
           "RAYDIO_TEST_POSTGRES_URL": "postgresql+psycopg://u:p@db.example/test"}
    result = _test_deps(env)
    assert result.returncode == 0, result.stderr
    assert "missing" not in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("ci", [False, True])
def test_make_test_monitoring_skips_without_promtool_outside_ci(tmp_path, ci):
    (tmp_path / "make").symlink_to(shutil.which("make"))  # a PATH with make and nothing else
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), **({"CI": "true"} if ci else {})}
    result = subprocess.run([str(tmp_path / "make"), "--no-print-directory", "test-monitoring"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    if ci:
        assert result.returncode != 0 and "promtool not found and CI=true" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "test-monitoring: skipped, promtool not found" in result.stdout

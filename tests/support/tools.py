"""System tools some tests need, and what happens when one is missing: run, skip, or fail in CI.

A test that needs a tool carries its marker (``@pytest.mark.requires_promtool``, ...). `make test`
(scripts/test-deps.sh) installs the tools where it can (root and apt-get). Where a tool is still missing, its
tests are skipped with one line naming the tool and how to install it, and every other test runs. With
``CI=true`` (what CI services set, and `.ci/run`) a missing tool fails its tests instead: CI never goes
green by skipping.

This module is a pytest plugin (``tests/conftest.py`` loads it) and imports nothing of raydio, so it also
loads in a bare pytest run.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import pytest

Verdict = Literal["run", "skip", "fail"]


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``CI`` says this is a CI run (GitHub Actions, GitLab and most others set ``CI=true``)."""
    return (os.environ if environ is None else environ).get("CI", "").strip().lower() in {"1", "true", "yes"}


def decide(available: bool, ci: bool) -> Verdict:
    """What a test that needs a tool does: run when the tool is there; otherwise skip, or fail in CI."""
    if available:
        return "run"
    return "fail" if ci else "skip"


def _chromium() -> bool:
    explicit = os.environ.get("RAYDIO_CHROMIUM")
    if explicit:
        return os.access(explicit, os.X_OK)
    return shutil.which("chromium") is not None


def _postgres() -> bool:
    # A URL given wins; otherwise scripts/test-postgres.sh can start Debian's server, which needs root.
    if os.environ.get("RAYDIO_TEST_POSTGRES_URL"):
        return True
    return os.geteuid() == 0 and shutil.which("pg_ctlcluster") is not None


@dataclass(frozen=True)
class Tool:
    name: str
    purpose: str
    install: str
    probe: Callable[[], bool]

    @property
    def marker(self) -> str:
        return f"requires_{self.name}"

    def available(self) -> bool:
        return self.probe()

    def missing_message(self) -> str:
        return f"{self.name} not found ({self.purpose}): {self.install}"


def _on_path(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("promtool", "checks alert rules and PromQL", "install Debian's prometheus (`sudo apt-get install prometheus`)",
         _on_path("promtool")),
    Tool("prometheus", "scrapes the live stack", "install Debian's prometheus (`sudo apt-get install prometheus`)",
         _on_path("prometheus")),
    Tool("chromium", "drives the page in a browser", "install Debian's chromium (`sudo apt-get install chromium`) "
         "or set RAYDIO_CHROMIUM to a Chromium binary", _chromium),
    Tool("postgres", "storage on PostgreSQL", "set RAYDIO_TEST_POSTGRES_URL=postgresql+psycopg://USER:PASS@HOST/DB, "
         "or run `make test` as root to install and start Debian's postgresql", _postgres),
    Tool("kubectl", "builds the kustomize overlays", "install kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/)",
         _on_path("kubectl")),
)}


@functools.cache
def _available(name: str) -> bool:  # once per session: the hooks ask for every marked test
    return TOOLS[name].available()


def pytest_configure(config: pytest.Config) -> None:
    for tool in TOOLS.values():
        config.addinivalue_line("markers", f"{tool.marker}: needs {tool.name} ({tool.purpose}); "
                                           "skipped when it is missing, a failure when CI=true")


def pytest_report_header(config: pytest.Config) -> str:
    missing = [name for name in TOOLS if not _available(name)]
    if not missing:
        return f"test tools: all found ({', '.join(TOOLS)})"
    then = "their tests FAIL (CI=true)" if in_ci() else "their tests are skipped"
    return f"test tools: missing {', '.join(missing)}: {then}; `make test` installs them as root"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in sorted({m.name.removeprefix("requires_") for m in item.iter_markers() if m.name.startswith("requires_")}):
        tool = TOOLS[name]
        verdict = decide(_available(name), in_ci())
        # Raised here, not at the test: pytest's summary then folds every skip for one tool into one line.
        if verdict == "skip":
            pytest.skip(tool.missing_message())
        if verdict == "fail":
            pytest.fail(f"{tool.missing_message()} [CI=true: a missing tool is a failure, not a skip]", pytrace=False)

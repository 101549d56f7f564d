"""The Dockerfile, the chart and the code agree: what the image copies, who it runs as, which versions."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import yaml

from tests.unit.deploy.manifests import CHART, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(name + " ")]


def _in_build_context(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern that matches decides; `!` re-includes."""
    included = True
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            included = negate
    return included


def test_everything_the_image_copies_exists_and_is_in_the_build_context():
    sources = []
    for args in _instructions("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        if "--from=" not in args:
            sources += parts[:-1]
    assert {"requirements.txt", "services", "configs"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert _in_build_context(source), f".dockerignore excludes {source}, which the Dockerfile copies"
    assert not _in_build_context("tests") and not _in_build_context(".venv")


def test_image_runs_as_the_user_the_chart_expects_with_the_prepared_cache():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert _instructions("USER")[-1].strip() == str(values["podSecurityContext"]["runAsUser"])
    env = " ".join(_instructions("ENV"))
    cache_dirs = set(re.findall(r"RAYDIO_CACHE_DIR=(\S+)", env))
    assert len(cache_dirs) == 1, "the models stage and the runtime stage must use the same RAYDIO_CACHE_DIR"
    (cache_dir,) = cache_dirs
    assert any(f"--from=models {cache_dir}" in copy for copy in _instructions("COPY"))
    assert any("services.cli prepare" in run for run in _instructions("RUN"))


def test_versions_agree_across_image_chart_and_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    requirements = (ROOT / "requirements.txt").read_text()
    ray_pin = re.search(r"^ray\[serve\]==(\S+)$", requirements, re.M).group(1)
    assert values["rayVersion"] == ray_pin, "values.yaml rayVersion must equal the ray pin in requirements.txt"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    # The Dockerfile installs torch at the version requirements.txt pins, from the variant's wheel index.
    assert "sed -n 's/^torch==//p' /tmp/requirements.txt" in DOCKERFILE

"""The kustomize overlays build, validate like the chart's output, and stay equal to the chart's defaults."""

from __future__ import annotations

import difflib
import os

import pytest

from tests.unit.deploy.manifests import (
    CHART,
    KUSTOMIZE,
    canonical,
    find,
    kube_versions,
    kustomize,
    load_values,
    render,
    validation_errors,
    without_helm_labels,
)

pytestmark = pytest.mark.requires_kubectl

# overlay -> the chart values it must equal
OVERLAYS = {"gpu": None, "cpu": CHART / "ci" / "cpu-values.yaml"}
# The database URL only reaches the Secret, which the overlays leave to the operator.
SHARED_DB = {"secrets": {"databaseUrl": "postgresql+psycopg://raydio@postgres/raydio"}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_for_every_supported_kubernetes(overlay):
    objects = kustomize(overlay)
    assert not find(objects, "ConfigMap"), "the serve-config ConfigMap is kustomize-local and must not be emitted"
    errors = validation_errors(objects, kube_versions())
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_equals_the_chart(overlay):
    """Same objects, same content, except Helm's own labels and the Secret (created by hand without Helm)."""
    values = OVERLAYS[overlay]
    chart = {(o["kind"], o["metadata"]["name"]): canonical(without_helm_labels(o))
             for o in render(load_values(values) if values else SHARED_DB) if o["kind"] != "Secret"}
    built = {(o["kind"], o["metadata"]["name"]): canonical(o) for o in kustomize(overlay)}
    assert sorted(built) == sorted(chart)
    for key in chart:
        diff = "\n".join(difflib.unified_diff(chart[key].splitlines(), built[key].splitlines(), "chart", "kustomize", lineterm=""))
        assert not diff, f"{key} differs:\n{diff}"


def test_images_rewrites_every_container_of_the_rayservice(tmp_path):
    """A team's overlay sets its registry with `images:` (kustomize finds containers in any kind); none keeps the placeholder."""
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(KUSTOMIZE / 'overlays' / 'gpu', tmp_path)}]\n"
        "images:\n  - {name: ghcr.io/raydio/raydio, newName: registry.example.com/ml/raydio, newTag: 0.2.0-cu128}\n")
    rayservice = find(kustomize(tmp_path), "RayService")[0]
    cluster = rayservice["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    images = {c["image"] for spec in specs for c in spec["containers"] + spec.get("initContainers", [])}
    assert images == {"registry.example.com/ml/raydio:0.2.0-cu128"}

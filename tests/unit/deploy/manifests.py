"""Render the Helm chart and the kustomize overlays offline and validate what they produce.

Built-in kinds are validated with kubernetes-validate (strict: unknown fields fail) for every Kubernetes
minor the chart claims; custom resources against their CRD's openAPIV3Schema with jsonschema, with
unknown fields failing too. A kind neither knows is an error, never a skip.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "raydio"
KUSTOMIZE = ROOT / "deploy" / "k8s"
CRDS = ROOT / "tests" / "data" / "crds"
RELEASE, NAMESPACE = "raydio", "raydio"
# Labels only Helm adds; the kustomize overlays have everything else.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version")

# kubernetes-validate re-reads a 1.3 MB definitions file on every call; the files never change.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def kube_versions() -> list[str]:
    """Every minor from the chart's kubeVersion floor to the newest kubernetes-validate ships."""
    claim = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    floor = re.fullmatch(r">=\s*1\.(\d+)\.0-0", claim)
    assert floor, f"Chart.yaml kubeVersion {claim!r} is not of the form '>=1.N.0-0' this test understands"
    newest = int(kubernetes_validate.latest_version().split(".")[1])
    return [f"1.{minor}" for minor in range(int(floor.group(1)), newest + 1)]


def _rendered(values: dict[str, Any] | None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects for these values (NOTES.txt excluded), as an install would create them."""
    return [doc for path, text in sorted(_rendered(values).items()) if path.endswith((".yaml", ".yml"))
            for doc in yaml.safe_load_all(text) if doc]


def render_notes(values: dict[str, Any] | None = None) -> str:
    return _rendered(values)[f"{CHART.name}/templates/NOTES.txt"]


def kustomize(overlay: str | Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of deploy/k8s/overlays/<overlay>, or of any kustomization directory given as a path."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `kubectl kustomize` builds the overlays (any kubectl >= 1.27)"
    directory = overlay if isinstance(overlay, Path) else KUSTOMIZE / "overlays" / overlay
    result = subprocess.run([kubectl, "kustomize", str(directory)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def find(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


# --- custom resources -------------------------------------------------------------------------------------


def _forbid_unknown_fields(schema: Any) -> Any:
    """An API server with strict field validation rejects unknown fields; OpenAPI schemas only say so implicitly."""
    if isinstance(schema, dict):
        schema = {key: _forbid_unknown_fields(value) for key, value in schema.items()}
        if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_forbid_unknown_fields(item) for item in schema]
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD in tests/data/crds."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = _forbid_unknown_fields(version["schema"]["openAPIV3Schema"])
                # Object metadata is checked by the API server, not the CRD schema; check the basics here.
                schema["properties"]["metadata"] = {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                                   "namespace": {"type": "string"},
                                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                   "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
                    "additionalProperties": False}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _embedded(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Built-in objects inside a RayService, wrapped as kinds kubernetes-validate knows."""
    if obj["kind"] != "RayService":
        return
    spec = obj["spec"]
    if "serveService" in spec:
        service = copy.deepcopy(spec["serveService"])
        yield "spec.serveService", {"apiVersion": "v1", "kind": "Service", **service}
    cluster = spec["rayClusterConfig"]
    groups = [("headGroupSpec", cluster["headGroupSpec"])]
    groups += [(f"workerGroupSpecs[{g['groupName']}]", g) for g in cluster.get("workerGroupSpecs", [])]
    for where, group in groups:
        yield f"{where}.template", {"apiVersion": "v1", "kind": "PodTemplate",
                                    "metadata": {"name": "template"}, "template": group["template"]}


def validation_errors(objects: list[dict[str, Any]], versions: list[str]) -> list[str]:
    """Every problem in these objects for every version, one line each; empty when all are valid."""
    errors = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        crd = crd_schemas().get((obj.get("apiVersion"), obj.get("kind")))
        if crd is not None:
            validator = jsonschema.Draft202012Validator(crd)
            errors += [f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
            targets = [(f"{name} {where}", inner) for where, inner in _embedded(obj)]
        else:
            targets = [(name, obj)]
        for label, target in targets:
            for version in versions:
                try:
                    kubernetes_validate.validate(target, version, strict=True)
                except kubernetes_validate.SchemaNotFoundError:
                    errors.append(f"{label}: kind unknown to Kubernetes {version} and to tests/data/crds")
                    break
                except kubernetes_validate.ValidationError as exc:
                    path = ".".join(map(str, exc.path))
                    errors.append(f"{label} (Kubernetes {version}): {path}: {exc.message}")
    return errors


def without_helm_labels(obj: Any) -> Any:
    """A copy with the labels only Helm adds removed, everywhere they occur."""
    obj = copy.deepcopy(obj)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            labels = node.get("labels")
            if isinstance(labels, dict):
                for key in HELM_ONLY_LABELS:
                    labels.pop(key, None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(obj)
    return obj


def canonical(obj: dict[str, Any]) -> str:
    """Comparable text of an object: serveConfigV2 parsed (its formatting is free), keys sorted."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "RayService":
        obj["spec"]["serveConfigV2"] = yaml.safe_load(obj["spec"]["serveConfigV2"])
    return json.dumps(obj, sort_keys=True, indent=1)

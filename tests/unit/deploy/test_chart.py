"""The Helm chart renders, lints strictly and produces objects a cluster would accept, for every values file."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from services.config import RaydioAppArgs
from tests.unit.deploy.manifests import (
    CHART,
    ROOT,
    find,
    kube_versions,
    load_values,
    render,
    render_notes,
    validation_errors,
)

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# The least a multi-pod install must add to the defaults: a database every pod shares (SQLite per pod is refused).
SHARED_DB = {"secrets": {"databaseUrl": "postgresql+psycopg://raydio@postgres/raydio"}}
BAD_VALUES = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))
VARIANTS = {"defaults": SHARED_DB} | {path.stem: path for path in CI_VALUES}
# ServiceMonitor is the alternative to the PodMonitor of monitoring-values.yaml; render it too.
EXTRA_VARIANTS = {"service-monitor": {**SHARED_DB, "monitoring": {"serviceMonitor": {"enabled": True}}}}


def _values(variant: str) -> dict | None:
    if variant in EXTRA_VARIANTS:
        return EXTRA_VARIANTS[variant]
    path = VARIANTS[variant]
    return load_values(path) if isinstance(path, Path) else path


ALL_VARIANTS = [*VARIANTS, *EXTRA_VARIANTS]


def _pod_templates(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]


def test_ci_values_files_cover_cpu_gpu_and_monitoring():
    assert {path.stem for path in CI_VALUES} >= {"cpu-values", "gpu-values", "monitoring-values"}


@pytest.mark.parametrize("variant", [*VARIANTS])
def test_chart_lints_strictly(variant):
    # kube_version makes lint check the chart's kubeVersion constraint and API versions for both ends of the range.
    for version in (kube_versions()[0], kube_versions()[-1]):
        report = helm.lint(CHART, _values(variant), strict=True, kube_version=f"v{version}.0")
        findings = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not findings, (report["errors"], findings)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_rendered_object_validates_for_every_supported_kubernetes(variant):
    objects = render(_values(variant))
    assert find(objects, "RayService"), "the chart must render a RayService"
    errors = validation_errors(objects, kube_versions())
    assert not errors, "\n".join(errors)


def test_validation_catches_unknown_fields_and_kinds():
    """The checks above could fail: a typo in a pod template, a CRD field or an unknown kind is reported."""
    rayservice = find(render(SHARED_DB), "RayService")[0]
    bad = json.loads(json.dumps(rayservice))
    bad["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    bad["spec"]["upgradeStrategy"]["typo"] = 1
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    errors = "\n".join(validation_errors([bad, unknown], ["1.30"]))
    assert "imagePullPolice" in errors
    assert "typo" in errors
    assert "Widget/w: kind unknown" in errors


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_serve_config_parses_with_ray_and_raydio_schemas(variant):
    from ray.serve.schema import ServeDeploySchema

    rayservice = find(render(_values(variant)), "RayService")[0]
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(config)
    assert schema.applications, "serveConfigV2 has no applications"
    for app in schema.applications:
        module, _, attr = app.import_path.partition(":")
        builder = getattr(importlib.import_module(module), attr)
        assert callable(builder)
        if app.import_path == "services.app:build_app":
            RaydioAppArgs.model_validate(app.args or {})
    # Each pod's Serve port is the one the config listens on.
    port = config["http_options"]["port"]
    for template in _pod_templates(rayservice):
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["serve"] == port and ports["metrics"] == 8080


def test_local_serve_config_pastes_into_the_chart():
    """serveConfig mirrors configs/serve/*.yaml: the local file is accepted with only the cluster's network settings changed."""
    local = yaml.safe_load((ROOT / "configs" / "serve" / "local.yaml").read_text())
    cluster = {"proxy_location": "EveryNode", "http_options": {**local["http_options"], "host": "0.0.0.0"}}
    values = {**SHARED_DB, "serveConfig": {**local, **cluster},
              "workers": {"gpu": {"enabled": False}}}
    rayservice = find(render(values), "RayService")[0]
    assert yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"] == local["applications"]


@pytest.mark.parametrize("variant", [*VARIANTS])
def test_pods_are_locked_down_and_have_the_scratch_space_ray_needs(variant):
    rayservice = find(render(_values(variant)), "RayService")[0]
    for index, template in enumerate(_pod_templates(rayservice)):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        # Only the head, for the autoscaler sidecar, holds an API token.
        assert spec["automountServiceAccountToken"] is (index == 0)
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] == container["resources"]["limits"]
        ray = spec["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in ray["volumeMounts"]}
        # "ray-logs" is the name KubeRay also mounts into the autoscaler sidecar.
        assert mounts["/tmp/ray"] == "ray-logs" and "/tmp" in mounts
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert all("emptyDir" in volumes[name] for name in mounts.values())
    autoscaler = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert autoscaler["securityContext"]["readOnlyRootFilesystem"] is True


def test_head_serves_no_models_and_gpu_workers_get_whole_gpus():
    spec = find(render(SHARED_DB), "RayService")[0]["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["excludeHeadPodFromServeSvc"] is True
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"] == {"mode": "token"}
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "cpu"}
    gpu = groups["gpu"]["template"]["spec"]
    resources = gpu["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    assert gpu["nodeSelector"]
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_cpu_values_have_no_gpu_anywhere():
    rayservice = find(render(load_values(CHART / "ci" / "cpu-values.yaml")), "RayService")[0]
    assert [g["groupName"] for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]] == ["cpu"]
    args = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert all(section.get("num_gpus", 0) == 0 for section in args.values() if isinstance(section, dict))


def test_ingress_streams_without_buffering_and_pins_ui_sessions():
    objects = render(load_values(CHART / "ci" / "gpu-values.yaml"))
    ingresses = {i["metadata"]["name"]: i for i in find(objects, "Ingress")}
    assert set(ingresses) == {"raydio-api", "raydio-ui"}
    for ingress in ingresses.values():
        notes = ingress["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
        assert ingress["spec"]["tls"][0]["secretName"] == "raydio-tls"
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "raydio-serve-svc", "port": {"name": "serve"}}
    assert ingresses["raydio-ui"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert "nginx.ingress.kubernetes.io/affinity" not in ingresses["raydio-api"]["metadata"]["annotations"]
    assert ingresses["raydio-ui"]["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/ui"
    # The Serve Service the Ingress points at is the one KubeRay creates from spec.serveService.
    assert find(objects, "RayService")[0]["spec"]["serveService"]["metadata"]["name"] == "raydio-serve-svc"


def test_secret_or_existing_secret_reaches_every_raydio_container():
    created = render({"secrets": {"jwtSecret": "k" * 32, "databaseUrl": "postgresql+psycopg://db/raydio"}})
    secret = find(created, "Secret")[0]
    assert secret["stringData"] == {"RAYDIO_JWT_SECRET": "k" * 32, "RAYDIO_DATABASE_URL": "postgresql+psycopg://db/raydio"}
    generated = find(render(SHARED_DB), "Secret")[0]["stringData"]["RAYDIO_JWT_SECRET"]
    assert len(generated) == 48
    existing = render({"secrets": {"existingSecret": "mine"}})
    assert not find(existing, "Secret")
    for objects, name in ((created, "raydio"), (existing, "mine")):
        for template in _pod_templates(find(objects, "RayService")[0]):
            for container in template["spec"]["containers"] + template["spec"]["initContainers"]:
                assert container["envFrom"] == [{"secretRef": {"name": name}}]
                assert {"name": "RAYDIO_ENVIRONMENT", "value": "production"} in container["env"]


def test_every_pod_migrates_the_database_before_ray_starts():
    for template in _pod_templates(find(render(SHARED_DB), "RayService")[0]):
        (init,) = template["spec"]["initContainers"]
        assert init["command"][:2] == ["python", "-c"] and "migrate(url)" in init["command"][2]
        # The same /tmp as the Ray container: the default SQLite file lives under HOME=/tmp.
        assert {"name": "tmp", "mountPath": "/tmp"} in init["volumeMounts"]
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
    without = find(render({**SHARED_DB, "migrations": {"enabled": False}}), "RayService")[0]
    assert all("initContainers" not in t["spec"] for t in _pod_templates(without))


def test_migration_command_runs_against_a_fresh_sqlite_database(tmp_path):
    """The init container's Python, run here as the pod would: HOME on an empty folder, production settings."""
    template = _pod_templates(find(render(SHARED_DB), "RayService")[0])[0]
    command = template["spec"]["initContainers"][0]["command"]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "RAYDIO_ENVIRONMENT": "production", "RAYDIO_JWT_SECRET": "s" * 48}
    result = subprocess.run([sys.executable, *command[1:]], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.rglob("raydio.db"))


def test_monitoring_objects_only_when_asked_and_rules_come_from_the_rule_file():
    assert not {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"} & {o["kind"] for o in render(SHARED_DB)}
    objects = render(load_values(CHART / "ci" / "monitoring-values.yaml"))
    rules = yaml.safe_load((CHART / "files" / "raydio-alerts.rules.yaml").read_text())
    assert find(objects, "PrometheusRule")[0]["spec"] == rules
    assert find(objects, "PodMonitor")[0]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    dashboard = find(objects, "ConfigMap")[0]
    assert json.loads(dashboard["data"]["raydio-dashboard.json"]) == json.loads((CHART / "files" / "raydio-dashboard.json").read_text())
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    service_monitor = render(EXTRA_VARIANTS["service-monitor"])
    assert find(service_monitor, "ServiceMonitor") and find(service_monitor, "Service")[0]["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("path", BAD_VALUES, ids=lambda p: p.stem)
def test_bad_values_are_rejected_with_every_problem_named(path):
    """Each file lists the phrases its error must contain as `# expect:` lines."""
    expected = [line.split("# expect:", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("# expect:")]
    assert expected, f"{path.name} has no '# expect:' lines"
    with pytest.raises(helm.HelmError) as info:
        render(load_values(path))
    message = str(info.value)
    missing = [phrase for phrase in expected if phrase not in message]
    assert not missing, f"missing {missing} in:\n{message}"
    if isinstance(info.value, helm.HelmValuesError):
        # Schema violations fail `helm lint` too (lint deliberately ignores `fail`, so cross-field checks show at render).
        assert helm.lint(CHART, load_values(path), strict=True)["errors"]


def _one_app(ingress_max: int, jobs_max: int) -> dict:
    args = {"device": "cpu", "ingress": {"autoscaling": {"min_replicas": 1, "max_replicas": ingress_max}},
            "jobs": {"autoscaling": {"min_replicas": 1, "max_replicas": jobs_max}}}
    return {"applications": [{"name": "raydio", "route_prefix": "/", "import_path": "services.app:build_app", "args": args}]}


def test_a_sqlite_file_per_pod_is_refused_when_several_pods_open_the_database():
    """With no database URL each pod gets its own SQLite file: keys made on one pod are unknown on the next."""
    with pytest.raises(helm.HelmError) as info:
        render()  # the defaults: ingress 1 + jobs 2 replicas over up to 4 GPU + 4 CPU pods
    message = str(info.value)
    assert "secrets.databaseUrl is empty" in message and "3 replicas open the database" in message
    assert "raydio.ingress: 1, raydio.jobs: 2" in message and "up to 8 worker pods" in message
    one_cpu_pod = {"workers": {"gpu": {"enabled": False}, "cpu": {"minReplicas": 1, "maxReplicas": 1}}}
    two_cpu_pods = {"workers": {"gpu": {"enabled": False}, "cpu": {"minReplicas": 1, "maxReplicas": 2}}}
    refused = [
        {"secrets": {"databaseUrl": "sqlite:////data/raydio.db"}},
        {"env": [{"name": "RAYDIO_DATABASE_URL", "value": "sqlite:////data/raydio.db"}]},
        {**two_cpu_pods, "serveConfig": _one_app(1, 1)},  # one ingress and one runner may land on different pods
        {**one_cpu_pod, "workers": {"cpu": {"maxReplicas": 1}}, "serveConfig": _one_app(1, 2)},  # GPU group still on
    ]
    for values in refused:
        with pytest.raises(helm.HelmError, match="every pod opens its own SQLite file"):
            render(values)
    accepted = [
        SHARED_DB,
        {"secrets": {"existingSecret": "mine"}},  # holds RAYDIO_DATABASE_URL (the chart cannot read it)
        {"env": [{"name": "RAYDIO_DATABASE_URL", "value": "postgresql+psycopg://db/raydio"}]},
        {**one_cpu_pod, "serveConfig": _one_app(1, 2)},  # every replica on the one pod: one file, shared
        {**two_cpu_pods, "serveConfig": _one_app(1, 0 + 1), "secrets": {"databaseUrl": "postgresql://db/raydio"}},
    ]
    for values in accepted:
        assert find(render(values), "RayService"), values


def test_notes_tell_how_to_reach_the_uis_and_the_api():
    notes = render_notes(SHARED_DB)
    assert "port-forward svc/raydio-serve-svc 8000:8000" in notes and "/ui/chat/" in notes
    with_ingress = render_notes(load_values(CHART / "ci" / "gpu-values.yaml"))
    assert "https://raydio.example.com/ui/chat/" in with_ingress and "https://raydio.example.com/v1" in with_ingress


def test_generated_schema_and_values_table_are_current():
    result = subprocess.run([sys.executable, "scripts/chart_sync.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_value_is_documented():
    from scripts.chart_sync import _documented_keys

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = {key for key, _, _ in _documented_keys((CHART / "values.yaml").read_text())}

    def check(node, prefix=""):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted not in documented:
                assert isinstance(value, dict) and value, f"values.yaml: {dotted} has no '# --' comment"
                check(value, dotted + ".")

    check(values)


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (`make test` does, as root)"
    return path


@pytest.mark.requires_promtool
def test_alert_rules_pass_promtool():
    result = subprocess.run([_promtool(), "check", "rules", str(CHART / "files" / "raydio-alerts.rules.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.requires_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every panel query, once Grafana's variables are replaced by plain values."""
    dashboard = json.loads((CHART / "files" / "raydio-dashboard.json").read_text())
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]  # rows hold panels too
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"

    def plain(expr: str) -> str:  # Grafana's variables: intervals become 5m, label filters match anything
        expr = re.sub(r"\$\{?__(rate_)?interval\}?", "5m", expr)
        return re.sub(r"\$\{?\w+(:\w+)?\}?", ".*", expr)

    rules = [{"record": f"raydio:dashboard_query:{i}", "expr": plain(expr)} for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

"""Start a local (or join an existing) Ray cluster, deploy a Serve config file, wait until ready, shut down.

Used by ``make run`` (through ``services.cli``) and by the integration tests, so both run the same path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from services.config import Settings, load_serve_config, raydio_apps

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def prepare_models(settings: Settings, config: dict[str, Any]) -> None:
    """Make what the catalogue's replicas will load, once, before they start: builtin models are made from
    bundled data, GGUF files are converted to torch checkpoints. Everything else is loaded where it lies."""
    from services.models import sources

    for app in raydio_apps(config):
        for model in app.models:
            path = sources.resolve(model.source, settings.cache_dir, must_exist=False)
            # torch is imported only when there is something to make: a warm start skips ~1.5 s of imports
            if model.source == "builtin://digits-cnn" and not path.exists():
                from services.models import digits

                digits.export_torchscript(path, settings.cache_dir)
            elif model.kind == "text-generation" and path.suffix == ".gguf" and not sources.is_converted(path, settings.cache_dir):
                from services.models import chat

                chat.ensure_converted(path, settings.cache_dir)


def check_models(settings: Settings, config: dict[str, Any]) -> list[str]:
    """Load every tensor model whose file is here and dry-run its signature; the problems found, by entry."""
    from services.models import sources
    from services.models.tensor import SignatureMismatch, TensorModel

    problems = []
    for app in raydio_apps(config):
        for model in app.models:
            if model.kind != "torchscript":
                continue
            path = sources.resolve(model.source, settings.cache_dir, must_exist=False)
            if not path.exists():
                continue  # a builtin not prepared yet: `prepare` makes it, the replica checks it
            try:
                TensorModel(path, model, "cpu").load()
            except SignatureMismatch as exc:
                problems.append(f"  - models (name: {model.name}).signature: {exc}")
    return problems


def ingress_auth_enabled(config: dict[str, Any]) -> bool:
    """Whether any raydio app in a Serve config keeps authentication on (the default)."""
    return any(app.ingress.auth.enabled for app in raydio_apps(config))


def prepare_state(settings: Settings) -> Settings:
    """Migrate the database and make sure every replica will share one JWT secret.

    A secret set in RAYDIO_JWT_SECRET wins; otherwise one is generated once and kept (mode 0600) next to
    the cache, then exported so Ray passes it to the replicas. Returns settings that carry it.
    """
    import secrets

    from services.storage.db import migrate

    migrate(settings.database_url)
    if settings.jwt_secret is None:
        path = settings.cache_dir / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        os.environ["RAYDIO_JWT_SECRET"] = path.read_text().strip()
    os.environ["RAYDIO_DATABASE_URL"] = settings.database_url
    return Settings()


def ensure_admin_key(settings: Settings) -> str | None:
    """Create a first admin key when none exists; returns its secret (to print once) or None."""
    from services.storage.db import session_scope
    from services.storage.repositories import KeyRepository

    with session_scope(settings.database_url) as session:
        if KeyRepository.count_admins(session):
            return None
        return KeyRepository.create(session, "first admin (make run)", ["admin", "inference"]).secret


HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


# Where Ray's HAProxy keeps its config, sockets and state. Ray's default is /tmp/haproxy-serve for everyone: the
# first user to run it owns that directory and another user's HAProxy cannot start (Errno 13). One per user here,
# short enough for the Unix socket paths Ray builds under it (it adds the 56-character node id).
HAPROXY_FILES = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg", "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
                 "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
                 "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock"}


def haproxy_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"raydio-haproxy-{os.getuid()}"


def gradio_temp_dir(settings: Settings) -> Path:
    """Where Gradio keeps uploads and downloads: under raydio's cache, one per user. Gradio's own default,
    /tmp/gradio, belongs to whichever user made it first, and another user's uploads then fail (Errno 13)."""
    return Path(settings.cache_dir) / "gradio"


def start_ray(settings: Settings, metrics_port: int | None = None) -> int | None:
    """Start a local Ray cluster (or join ``settings.ray_address``); returns the port of its Prometheus metrics.

    Ray's metrics agent serves every process's metrics on that port (``settings.metrics_port`` unless
    ``metrics_port`` is given). A joined cluster keeps the port it was started with.
    """
    import ray

    # HAProxy in front of the ingress replicas (Ray's bundled binary) unless told otherwise: in `make bench` it cut the
    # no-op overhead ~4.5x against Serve's Python proxy (docs/operations.md). Read by the Serve controller, so it is
    # set before Ray starts the processes that inherit this environment; RAY_SERVE_ENABLE_HA_PROXY=0 turns it off.
    os.environ.setdefault(HA_PROXY_ENV, "1")
    os.environ.setdefault("GRADIO_TEMP_DIR", str(gradio_temp_dir(settings)))
    for key, name in HAPROXY_FILES.items():
        os.environ.setdefault(key, str(haproxy_dir() / name))
    env = {key: value for key, value in os.environ.items()
           if key.startswith(("RAYDIO_", "HF_", "OMP_", "OTEL_", "GRADIO_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    ray.init(
        # "local" always starts a new cluster, never joins one another process happens to run here.
        address=settings.ray_address or "local",
        num_cpus=settings.num_cpus if settings.ray_address is None else None,
        include_dashboard=False,
        runtime_env={"env_vars": env},
        logging_level=logging.WARNING,
        **({} if settings.ray_address else {"_metrics_export_port": settings.metrics_port if metrics_port is None else metrics_port}),
    )
    return metrics_export_port()


def metrics_export_port() -> int | None:
    """The port where this node's Ray metrics agent exports metrics in Prometheus format."""
    import ray

    try:
        return ray._private.worker.global_worker.node.metrics_export_port or None
    except AttributeError:  # a Ray Client connection (ray://) has no local node
        return None


def deploy(config_path: Path, http_port: int | None = None) -> dict[str, Any]:
    """Deploy a Serve config file the way a RayService does (``serve deploy``): the whole config goes to the Serve
    controller, which runs each app's builder and applies the config's deployment-level options on top, so the
    YAML behaves the same on a laptop and in a cluster. Returns the parsed config (optionally on another port)."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    config = load_serve_config(config_path)
    if http_port is not None:
        config.setdefault("http_options", {})["port"] = http_port
    client = serve_start(http_options=config.get("http_options", {}),
                         proxy_location=config.get("proxy_location", "HeadOnly"))
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    return config


def deploy_failure() -> str | None:
    """Why an application failed to deploy (its builder raised, a replica failed to start), if one did; None also
    when this process is not connected to Ray (it then only polls the HTTP endpoint)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return None
    for name, app in serve.status().applications.items():
        if str(app.status) in ("DEPLOY_FAILED", "ApplicationStatus.DEPLOY_FAILED"):
            return f"application {name!r} failed to deploy: {app.message}"
    return None


def applications_not_running() -> list[str]:
    """Applications (the ui application among them) not yet RUNNING; empty when not connected to Ray."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return []
    return [name for name, app in serve.status().applications.items() if not str(app.status).endswith("RUNNING")]


def base_url(config: dict[str, Any]) -> str:
    http = config.get("http_options", {})
    return f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 8000)}"


def wait_ready(url: str, timeout_s: float = 300.0, stop: threading.Event | None = None) -> float:
    """Poll ``/health/ready`` until it answers 200; returns the seconds waited.

    Raises InterruptedError as soon as ``stop`` is set (Ctrl-C while the replicas are still loading).
    """
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout_s:
        if stop is not None and stop.is_set():
            raise InterruptedError("stopped before raydio was ready")
        if (failure := deploy_failure()) is not None:
            raise RuntimeError(failure)
        try:
            response = httpx.get(f"{url}/health/ready", timeout=10)
            if response.status_code == 200 and (waiting := applications_not_running()):
                last = f"the api is ready; still deploying: {', '.join(waiting)}"
            elif response.status_code == 200:
                return time.monotonic() - start
            last = response.text[:300]
        except httpx.HTTPError as exc:
            last = repr(exc)
        if stop is not None:
            stop.wait(0.25)
        else:
            time.sleep(0.25)
    raise TimeoutError(f"raydio was not ready after {timeout_s:.0f}s; last answer: {last}")


def shutdown() -> None:
    """Stop Serve and Ray, then end any Ray process this one started that outlived them.

    ``ray.shutdown()`` leaves ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` running (they ignore
    SIGTERM), and a Serve that did not stop cleanly can leave its HAProxy on the port; they are our own
    descendants, found by PID before shutdown, so ending them is safe.
    """
    import psutil
    import ray
    from ray import serve

    ours = [p for p in psutil.Process().children(recursive=True) if _is_ray_process(p)]
    try:
        if ray.is_initialized():  # else serve.shutdown() would start a new Ray node only to find nothing in it
            serve.shutdown()
    finally:
        ray.shutdown()
        _, alive = psutil.wait_procs(ours, timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=5)


def _is_ray_process(process) -> bool:
    import psutil

    try:
        # haproxy: Ray's bundled one (RAY_SERVE_ENABLE_HA_PROXY), holding the HTTP port
        return process.name().startswith(("ray::", "raylet", "gcs_server", "haproxy")) or \
            any("/ray/" in part for part in process.cmdline()[:2])
    except psutil.Error:
        return False

"""Command line: ``python -m services.cli run|prepare|check-config``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from services.config import ConfigError, get_settings, load_serve_config
from services.telemetry.logs import configure_logging


def _run(config_path: Path, verbose: bool) -> int:
    from services import console, runner

    settings = get_settings()
    started = time.monotonic()
    log_path = console.new_log_file(settings.cache_dir)
    file_handler = console.configure_run_logging(log_path, settings.log_level, verbose)
    print(f"raydio: logs of Ray, Serve and the replicas go to {log_path}", flush=True)
    config = load_serve_config(config_path)
    print(f"raydio: preparing models in {settings.cache_dir} (the first run trains and converts the examples) ...", flush=True)
    runner.prepare_models(settings, config)
    settings = runner.prepare_state(settings)
    auth_enabled = runner.ingress_auth_enabled(config)
    admin_key = runner.ensure_admin_key(settings) if auth_enabled else None
    prepared = time.monotonic()
    print("raydio: starting Ray and Serve ...", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    metrics_port = runner.start_ray(settings)
    console.route_ray_worker_logs(file_handler, verbose)
    try:
        config = runner.deploy(config_path)
        url = runner.base_url(config)
        print("raydio: waiting for the replicas to load their models (Ctrl-C stops) ...", flush=True)
        try:
            runner.wait_ready(url, stop=stop)
        except InterruptedError:
            return 130
        print(f"""
{_ready_banner(time.monotonic() - started, prepared - started, config_path, log_path, verbose)}
{_auth_banner(auth_enabled, admin_key, settings.database_url)}
  index         {url}/
  API docs      {url}/docs
  health        {url}/health/ready
  KServe V2     {url}/v2  (tritonclient works)
  MCP           {url}/mcp/  (tools for assistants, streamable HTTP)
  the app       {url}/app  (hand-written page over the REST API)
{_models_banner(config, url)}
  metrics       {_metrics_line(metrics_port)}
  traces        {_tracing_line()}

Press Ctrl-C to stop every process this started.
""", flush=True)
        stop.wait()
    finally:
        print("raydio: shutting down Serve and Ray ...", flush=True)
        runner.shutdown()
    return 0


def _models_banner(config: dict, url: str) -> str:
    """Every catalogue entry with where it is reached, then the UIs."""
    from services.config import raydio_apps
    from services.core.catalogue import faces

    lines = ["  models"]
    for app in raydio_apps(config):
        for model in app.models:
            lines.append(f"    {model.name:<14}{model.kind:<20}{' · '.join(r for r in faces(model) if r.startswith(('POST', '/v2')))}")
            lines.append(f"    {'':<14}{'':<20}UI {url}/ui/{faces(model)[-1].split('/ui/')[-1]}")
    lines.append(f"  jobs UI       {url}/ui/jobs/")
    return "\n".join(lines)


def _ready_banner(total_s: float, prepare_s: float, config_path: Path, log_path: Path, verbose: bool) -> str:
    """The banner's first lines: time to ready, split into preparing models and starting Ray + Serve, and the log."""
    live = "shown here as well" if verbose else "RAYDIO_LOG_LEVEL=DEBUG make run shows them live"
    return (f"raydio is ready in {total_s:.0f} s (models {prepare_s:.0f} s, Ray and Serve {total_s - prepare_s:.0f} s; {config_path})\n"
            f"  logs          {log_path}  ({live})")


def _auth_banner(enabled: bool, admin_key: str | None, database_url: str) -> str:
    if not enabled:
        return "\n  !! AUTHENTICATION IS OFF (ingress.auth.enabled: false): anyone who reaches the port can use it.\n"
    if admin_key:
        return (f"\n  First admin API key (shown once, stored hashed in {database_url}):\n\n      {admin_key}\n\n"
                "  Send it as 'Authorization: Bearer <key>', or paste it at /login in a browser.\n")
    return ("\n  Authentication is on. An admin key already exists; create more with\n"
            "  `python -m services.cli create-key --name NAME [--admin]` or POST /v1/keys.\n")


def _create_key(name: str, admin: bool, rate_limit: int | None) -> int:
    from services import runner
    from services.storage.db import session_scope
    from services.storage.repositories import KeyRepository

    settings = runner.prepare_state(get_settings())
    with session_scope(settings.database_url) as session:
        created = KeyRepository.create(session, name, ["admin", "inference"] if admin else ["inference"], rate_limit)
    print(f"{created.key.id}  {created.secret}\n(the secret is shown once; only its hash is stored)")
    return 0


def _metrics_line(port: int | None) -> str:
    if port is None:  # joined through Ray Client: the cluster decided its port
        return "on each Ray node's metrics export port (the cluster's --metrics-export-port)"
    return f"http://127.0.0.1:{port}/metrics  (every replica; Prometheus: make prometheus, deploy/monitoring/prometheus.yml)"


def _tracing_line() -> str:
    import os

    from services.telemetry.tracing import tracing_requested

    if not tracing_requested():
        return "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export OTLP)"
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    return f"OTLP/HTTP to {endpoint}, sampler {os.environ.get('OTEL_TRACES_SAMPLER', 'parentbased_always_on')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raydio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Start Ray and Serve with a config file and serve until Ctrl-C.")
    check = sub.add_parser("check-config", help="Validate a Serve config file and exit.")
    prepare = sub.add_parser("prepare", help="Make what the catalogue's models need (builtin examples, GGUF "
                             "conversions) and cache it (for images and CI).")
    for p in (run, check, prepare):
        p.add_argument("--config", type=Path, default=None, help="Serve config (default: RAYDIO_SERVE_CONFIG).")
    run.add_argument("--verbose", action="store_true",
                     help="Print Ray's, Serve's and the replicas' logs live too (as RAYDIO_LOG_LEVEL=DEBUG does).")
    create = sub.add_parser("create-key", help="Create an API key in the configured database and print it once.")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="Also grant the admin scope (key management).")
    create.add_argument("--rate-limit", type=int, default=None, help="Requests per minute for this key.")
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_logging(settings.log_level, "cli", json_format=settings.log_format == "json")
    config_path = getattr(args, "config", None) or settings.serve_config
    try:
        config = load_serve_config(config_path)
        if args.command == "check-config":
            from services.runner import check_models

            problems = check_models(settings, config)
            if problems:
                raise ConfigError("\n".join([f"{config_path}: {len(problems)} problem(s)", *problems]))
            print(f"{config_path}: OK")
            return 0
        if args.command == "create-key":
            return _create_key(args.name, args.admin, args.rate_limit)
        if args.command == "prepare":
            from services.runner import prepare_models

            prepare_models(settings, config)
            return 0
        return _run(config_path, verbose=args.verbose or settings.log_level == "DEBUG")
    except ConfigError as exc:
        print(f"raydio: invalid configuration\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Metrics, traces and structured logs for every raydio process.

- ``metrics``: Prometheus metrics through ``ray.serve.metrics`` (exported by Ray's metrics agent);
- ``tracing``: OpenTelemetry spans and W3C context across the handle boundary (``OTEL_*`` variables);
- ``logs``: JSON log lines carrying the request id and trace id;
- ``gpu``: GPU memory and utilisation gauges for replicas on CUDA.
"""

from __future__ import annotations


def setup_process(component: str) -> None:
    """Call once where a replica starts: JSON logs at ``RAYDIO_LOG_LEVEL`` and tracing if ``OTEL_*`` asks for it."""
    from services.config import get_settings
    from services.telemetry.logs import configure_logging
    from services.telemetry.tracing import setup_tracing

    settings = get_settings()
    configure_logging(settings.log_level, component, json_format=settings.log_format == "json")
    setup_tracing(component)

"""Autoscaling on requests, for deployments whose callers coalesce them into fewer handle calls.

Serve scales on the handle calls a replica holds. An embedding model's callers merge concurrent requests into a
few calls each (``services.core.coalescing``), so its calls stay few however long the queue behind them grows. Its
replicas report the requests they hold instead (``record_autoscaling_stats``, Serve's custom autoscaling metrics),
and this policy applies Serve's own rule to them: desired replicas = requests in flight ÷ target_ongoing_requests,
with the deployment's delays, bounds and smoothing applied by Serve around it.
"""

from __future__ import annotations

from typing import Any

REQUESTS_IN_FLIGHT = "raydio_requests_in_flight"
POLICY = {"policy_function": "services.deployments.autoscaling:scale_on_requests"}
# The replicas report what they hold every 2 s, averaged over 10 s (Serve's defaults, 10 s over 30 s, made a step
# to 4x the load wait ~30 s for a second replica; its own ongoing-request count reaches the controller faster).
REQUEST_SCALING = {"policy": POLICY, "metrics_interval_s": 2.0, "look_back_period_s": 10.0}


def scale_on_requests(ctx) -> tuple[float, dict[str, Any]]:
    """Serve autoscaling policy (``autoscaling_config.policy``); falls back to Serve's default (handle calls)
    until the replicas have reported."""
    from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

    per_replica = (ctx.aggregated_metrics or {}).get(REQUESTS_IN_FLIGHT)
    if not per_replica or ctx.current_num_replicas == 0:
        return replica_queue_length_autoscaling_policy(ctx)
    return sum(per_replica.values()) / ctx.config.get_target_ongoing_requests(), {}

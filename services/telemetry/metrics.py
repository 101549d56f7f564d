"""raydio's Prometheus metrics, recorded in every replica with ``ray.serve.metrics``.

Ray's metrics agent on each node exports what every process on it records (``ray_`` is prefixed to
each name), so one scrape of the metrics port covers every replica on the node. Serve adds the
``deployment``, ``replica`` and ``application`` labels itself; raydio's own labels are bounded:
route *templates* (never raw paths), model names, HTTP methods, status codes and a few outcomes.

Serve's own ``ray_serve_*`` metrics already count requests per deployment, batch sizes
(``serve_actual_batch_size``), batch queue length (``serve_batch_queue_length``) and the handle-side
queue (``serve_deployment_queued_queries``); raydio does not duplicate them. docs/observability.md
lists every metric the dashboards and alerts use.

Two properties of Ray's export (2.60) shape what is recorded here: a histogram's ``_sum`` is rebuilt from
bucket midpoints, so it is approximate (exact totals are counters, e.g. ``raydio_model_inputs``); and a
gauge not set again within two export intervals is dropped, so gauges are only used for values that a
sampler refreshes (GPU) — live counts such as generations in flight come from Serve
(``serve_replica_processing_queries``).

Metric objects are created lazily, on first use in the process that records them, because Serve's
labels come from the replica context of that process. New groups follow the same pattern: a frozen
dataclass of metrics and a cached factory (database calls will get theirs here).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ray.serve.metrics import Counter, Gauge, Histogram

# Seconds. Wide enough for a 5 ms digits call and a two-minute chat completion.
LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
FORWARD_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
TTFT_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
TBT_BUCKETS_S = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0]
INPUT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"


@dataclass(frozen=True)
class IngressMetrics:
    http_requests: Counter
    http_duration: Histogram
    model_requests: Counter
    model_duration: Histogram

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        tags = {"route": route, "method": method if method in HTTP_METHODS else "OTHER", "status": str(status)}
        self.http_requests.inc(tags=tags)
        self.http_duration.observe(seconds, tags=tags)

    def observe_model_call(self, model: str, method: str, outcome: str, seconds: float) -> None:
        tags = {"model": model, "method": method, "outcome": outcome}
        self.model_requests.inc(tags=tags)
        self.model_duration.observe(seconds, tags=tags)


@functools.cache
def ingress_metrics() -> IngressMetrics:
    http_tags = ("route", "method", "status")
    model_tags = ("model", "method", "outcome")
    return IngressMetrics(
        http_requests=Counter("raydio_http_requests", "HTTP requests answered by the ingress, by route template, "
                              "method and status code.", tag_keys=http_tags),
        http_duration=Histogram("raydio_http_request_duration_seconds", "Time from request to the end of the "
                                "response (the whole stream for streamed responses).", boundaries=LATENCY_BUCKETS_S,
                                tag_keys=http_tags),
        model_requests=Counter("raydio_model_requests", "Calls from the ingress to a model deployment through its "
                               "handle, by outcome (ok, invalid, rejected, unavailable, timeout, error).",
                               tag_keys=model_tags),
        model_duration=Histogram("raydio_model_request_duration_seconds", "Time of one handle call, queueing in "
                                 "Serve included; for chat, until the stream ends.", boundaries=LATENCY_BUCKETS_S,
                                 tag_keys=model_tags),
    )


@dataclass(frozen=True)
class ModelMetrics:
    forward_duration: Histogram
    batch_inputs: Histogram
    inputs: Counter

    def observe_forward(self, model: str, inputs: int, seconds: float) -> None:
        tags = {"model": model}
        self.forward_duration.observe(seconds, tags=tags)
        self.batch_inputs.observe(inputs, tags=tags)
        self.inputs.inc(inputs, tags=tags)


@functools.cache
def model_metrics() -> ModelMetrics:
    return ModelMetrics(
        forward_duration=Histogram("raydio_model_forward_duration_seconds", "Time of one forward pass over a whole "
                                   "batch.", boundaries=FORWARD_BUCKETS_S, tag_keys=("model",)),
        batch_inputs=Histogram("raydio_model_batch_inputs", "Inputs (strings, images) in one forward pass; a batch of "
                               "requests carries one or more inputs each.", boundaries=INPUT_BUCKETS, tag_keys=("model",)),
        inputs=Counter("raydio_model_inputs", "Inputs processed by forward passes (exact, unlike a histogram's _sum "
                       "after Ray's export).", tag_keys=("model",)),
    )


@dataclass(frozen=True)
class ChatMetrics:
    time_to_first_token: Histogram
    time_between_tokens: Histogram
    generated_tokens: Counter
    prompt_tokens: Counter


@functools.cache
def chat_metrics() -> ChatMetrics:
    return ChatMetrics(
        time_to_first_token=Histogram("raydio_chat_time_to_first_token_seconds", "From the generation request "
                                      "reaching the chat replica to its first streamed token.",
                                      boundaries=TTFT_BUCKETS_S, tag_keys=("model",)),
        time_between_tokens=Histogram("raydio_chat_time_between_tokens_seconds", "Gap between successive streamed "
                                      "tokens of one generation.", boundaries=TBT_BUCKETS_S, tag_keys=("model",)),
        generated_tokens=Counter("raydio_chat_generated_tokens", "Completion tokens generated, by finish reason "
                                 "(stop, length, cancelled).", tag_keys=("model", "finish_reason")),
        prompt_tokens=Counter("raydio_chat_prompt_tokens", "Prompt tokens of accepted generations.", tag_keys=("model",)),
    )


@dataclass(frozen=True)
class GpuMetrics:
    memory_allocated: Gauge
    memory_reserved: Gauge
    memory_total: Gauge
    utilization: Gauge


@functools.cache
def gpu_metrics() -> GpuMetrics:
    tags = ("model", "gpu")
    return GpuMetrics(
        memory_allocated=Gauge("raydio_gpu_memory_allocated_bytes", "GPU memory held by tensors of this replica.",
                               tag_keys=tags),
        memory_reserved=Gauge("raydio_gpu_memory_reserved_bytes", "GPU memory reserved by this replica's caching "
                              "allocator.", tag_keys=tags),
        memory_total=Gauge("raydio_gpu_memory_total_bytes", "Memory of the GPU this replica uses.", tag_keys=tags),
        utilization=Gauge("raydio_gpu_utilization_ratio", "Fraction of time the GPU was busy over the last sample "
                          "period (NVML; absent without it).", tag_keys=tags),
    )


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobMetrics:
    jobs: Gauge
    items: Counter


@functools.cache
def job_metrics() -> JobMetrics:
    return JobMetrics(
        jobs=Gauge("raydio_jobs", "Durable jobs in the database by state, as one runner replica counts them (every "
                   "replica reports the same totals: aggregate with max).", tag_keys=("state",)),
        items=Counter("raydio_job_items", "Job items a runner computed and recorded, by job kind.", tag_keys=("kind",)),
    )


@dataclass(frozen=True)
class AuthMetrics:
    failures: Counter
    rate_limited: Counter
    rate_limit_fallbacks: Counter


@functools.cache
def auth_metrics() -> AuthMetrics:
    return AuthMetrics(
        failures=Counter("raydio_auth_failures", "Requests refused by authentication: reason unauthenticated (401: "
                         "missing, invalid, expired or revoked credentials) or forbidden (403: a scope is missing).",
                         tag_keys=("reason",)),
        rate_limited=Counter("raydio_rate_limited_requests", "Requests refused with 429 because their key exceeded "
                             "its rate limit.", tag_keys=()),
        rate_limit_fallbacks=Counter("raydio_rate_limit_store_fallbacks", "Rate-limit checks decided by the replica's "
                                     "own bucket because the shared store (the ratelimit deployment) did not answer.",
                                     tag_keys=()),
    )

"""The rate-limit store: one small replica holding every key's token bucket, asked by every api and ui replica.

One replica on purpose: the buckets are the state. If it restarts, the buckets start full again (at worst one extra
burst per key) and the ingress replicas fall back to their own buckets until it answers (``services.ingress.auth``).
"""

from __future__ import annotations

from ray import serve

from services.core.ratelimit import TokenBuckets


@serve.deployment(name="ratelimit", max_ongoing_requests=1024, max_queued_requests=4096,
                  ray_actor_options={"num_cpus": 0.05}, autoscaling_config={"min_replicas": 1, "max_replicas": 1})
class RateLimitDeployment:
    def __init__(self) -> None:
        self.buckets = TokenBuckets()

    async def take(self, key: str, limit_per_minute: int) -> float:  # on the event loop: microseconds, no thread hop
        """0 when the request may go; otherwise the seconds until the key's next request would be allowed."""
        return self.buckets.take(key, limit_per_minute)

    async def lease(self, key: str, limit_per_minute: int, want: int, returned: int = 0) -> tuple[int, float]:
        """Take back ``returned`` unspent tokens, then grant up to ``want``: (granted, seconds until the next token)."""
        return self.buckets.lease(key, limit_per_minute, want, returned)

    def check_health(self) -> None:
        return None

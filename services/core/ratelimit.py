"""Per-key token buckets: ``limit`` requests per minute, bursts up to ``limit``.

One ``TokenBuckets`` lives in each ingress replica (``shared_rate_limits: false``), or one in the api application's
``ratelimit`` deployment that every api and ui replica asks (the default), so a key's limit holds in total
whatever the number of replicas.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

MAX_KEYS = 100_000  # bounded: a flood of keys must not grow memory without end


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class TokenBuckets:
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, limit_per_minute: int, now: float | None = None) -> float:
        """Take one token: 0 when allowed; otherwise the seconds until the next request would be."""
        granted, retry_after = self.lease(key, limit_per_minute, 1, now=now)
        return 0.0 if granted else retry_after

    def lease(self, key: str, limit_per_minute: int, want: int, returned: int = 0,
              now: float | None = None) -> tuple[int, float]:
        """Give back ``returned`` unspent tokens, then take up to ``want``: (tokens granted, seconds until the next
        token when none was)."""
        now = time.monotonic() if now is None else now
        rate = limit_per_minute / 60.0
        with self.lock:
            bucket = self.buckets.get(key)
            if bucket is None:
                if len(self.buckets) >= MAX_KEYS:
                    self._drop_full(now)
                bucket = self.buckets[key] = _Bucket(float(limit_per_minute), now)
            bucket.tokens = min(float(limit_per_minute), bucket.tokens + (now - bucket.updated) * rate + max(returned, 0))
            bucket.updated = now
            granted = min(max(want, 1), int(bucket.tokens))
            if granted >= 1:
                bucket.tokens -= granted
                return granted, 0.0
            return 0, (1 - bucket.tokens) / rate

    def _drop_full(self, now: float) -> None:
        # Buckets idle for a minute have refilled (every limit refills within 60 s): forgetting them changes nothing.
        stale = [key for key, bucket in self.buckets.items() if now - bucket.updated >= 60.0]
        for key in stale or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[key]

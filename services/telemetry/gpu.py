"""GPU memory and utilisation of a model replica, sampled in a daemon thread when the replica uses CUDA.

Ray's own node metrics (``ray_node_gpus_utilization``, ``ray_node_gram_used``) cover whole GPUs; these
gauges say how much of it each replica holds, which is what fractional ``num_gpus`` needs.
"""

from __future__ import annotations

import logging
import threading
import time

from services.telemetry.metrics import gpu_metrics

logger = logging.getLogger(__name__)


def start_gpu_sampler(model: str, device, period_s: float = 5.0) -> threading.Thread | None:
    """Sample the CUDA device ``device`` every ``period_s`` seconds; returns None (and does nothing) off CUDA.

    Ray drops a gauge that is not set again within two metrics export intervals (10 s each by default),
    so the period must stay below that.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    tags = {"model": model, "gpu": str(index)}
    metrics = gpu_metrics()
    total = torch.cuda.get_device_properties(index).total_memory

    def sample_forever() -> None:
        while True:
            try:
                metrics.memory_allocated.set(torch.cuda.memory_allocated(index), tags=tags)
                metrics.memory_reserved.set(torch.cuda.memory_reserved(index), tags=tags)
                metrics.memory_total.set(total, tags=tags)
                try:
                    metrics.utilization.set(torch.cuda.utilization(index) / 100.0, tags=tags)
                except Exception:  # noqa: BLE001 - NVML (pynvml) is optional
                    pass
            except Exception:  # noqa: BLE001 - a sampling failure must never take the replica down
                logger.warning("GPU sampling failed for %s", model, exc_info=True)
            time.sleep(period_s)

    thread = threading.Thread(target=sample_forever, name=f"raydio-gpu-{model}", daemon=True)
    thread.start()
    return thread

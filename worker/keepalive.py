"""A worker's two periodic keep-alives: the leases of the jobs it holds, renewed three
times per visibility timeout, and its heartbeat (registration in Redis, and the local
liveness file while it makes progress)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from resnet_serve.shared.cpus import cpu_model_name
from resnet_serve.worker.watchdog import inference_limit_s

if TYPE_CHECKING:
    from resnet_serve.worker.redis_worker import RedisWorker

log = logging.getLogger(__name__)


async def renew_leases(worker: RedisWorker) -> None:
    """Renew the lease of every held job; a lease found lost drops its job, whose new
    owner answers it."""
    while True:
        await asyncio.sleep(worker.settings.visibility_timeout_s / 3)
        held = dict(worker.held)
        if not held:
            continue
        try:
            kept = await worker.leases.renew([h.entry_id for h in held.values()])
        except RedisError as exc:
            log.debug("lease renewal skipped: %r", exc)
            continue
        for job_id, h in held.items():
            if h.entry_id not in kept and worker.held.pop(job_id, None) is not None:
                worker.metrics.lost_leases.labels(worker.name).inc()
                log.warning("lost the lease on entry %s: its new owner answers it",
                            h.entry_id.decode())  # fmt: skip


def progressing(worker: RedisWorker) -> bool:
    """Waiting for work, or in an engine call younger than the watchdog's limit."""
    started = worker.runner.inferring_since
    limit = inference_limit_s(worker.runner, worker.settings)
    return started is None or time.monotonic() - started < limit


async def heartbeat(worker: RedisWorker) -> None:
    interval = worker.settings.heartbeat_interval_s
    info, cpu = worker.model.info, cpu_model_name()
    while True:
        # What gateways show of this worker (/v1/models): one model's workers may run
        # different engines on different CPUs.
        stats = {
            "worker": worker.worker_id,
            "images_per_s": worker.runner.images_per_s,
            "batches": worker.answering.batches,
            "max_batch": worker.settings.max_batch,
            "version": info.version,
            "engine": info.engine,
            "precision": info.precision,
            "cpu": cpu,
        }
        try:
            await worker.registration.register(stats, info, 3 * interval)
        except RedisError as exc:
            log.debug("heartbeat not written to Redis: %r", exc)
        # Local liveness is progress, whether or not Redis is up: a Redis outage must
        # not make Kubernetes restart every worker.
        if progressing(worker):
            worker.liveness.beat()
        await asyncio.sleep(interval)

"""`resnet-serve jobs-worker`: the arq worker that runs bulk jobs.

A gateway-side process, no torch: it decodes images itself and feeds them to the
inference streams through RedisBroker, as a gateway does (api/bulk/processing.py). arq
carries only job ids, as JSON (api/bulk/queue.py). On SIGTERM, running jobs get
`COMPLETION_WAIT_S` to finish; then they are cancelled and re-queued, and the next run
resumes after the images already done. A jobs-worker that dies outright leaves its job
locked for its arq timeout plus 10 s (arq's in-progress key), then another one resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from arq.worker import Worker, func
from redis.exceptions import RedisError

from resnet_serve.api.broker.redis_broker import RedisBroker
from resnet_serve.api.bulk.processing import BulkJobProcessor
from resnet_serve.api.bulk.queue import FUNCTION, dumps, loads
from resnet_serve.api.bulk.store import BulkStore
from resnet_serve.api.limits.budget import build_budgets
from resnet_serve.api.pipeline.decoding import DecodePool
from resnet_serve.shared.cpus import thread_count
from resnet_serve.shared.keys import Keys
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.redis_client import redis_client
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 5  # arq writes its health-check key this often, with a TTL 1 s longer
COMPLETION_WAIT_S = 10  # within Kubernetes' 30 s grace period
MAX_JOBS = 4  # jobs run at once; images in flight are bounded by bulk_concurrency
MAX_TRIES = 10  # runs of one job (restarts included) before arq gives up on it
FINISH_MARGIN_S = 30  # arq's own timeout sits past ours, so ours records the failure


def worker_id(settings: Settings) -> str:
    """The host name by default: `jobs-worker --check` runs as another process on the
    same host (a Kubernetes exec probe) and must find the same health-check key."""
    return settings.worker_id or socket.gethostname()


async def run_bulk_job(ctx: dict[str, Any], job_id: str) -> dict[str, Any]:
    processor: BulkJobProcessor = ctx["processor"]
    return await processor.run(job_id)


def build_worker(settings: Settings) -> Worker:
    """The arq Worker; build it inside the running event loop (arq binds to it)."""
    store = BulkStore(settings)
    metrics = Metrics()
    broker = RedisBroker(settings, metrics)
    # A decoding budget as a gateway's, sized from this process's own limit; no client
    # waits on a bulk image, so it waits for its turn (bounded by the job's timeout).
    budgets = build_budgets(settings, body_share=0, wait_s=settings.bulk_job_timeout_s)
    pool = DecodePool(
        thread_count(settings.decode_threads), settings.bulk_concurrency, metrics, budgets.decoding
    )

    async def startup(ctx: dict[str, Any]) -> None:
        await broker.start()
        ctx["processor"] = BulkJobProcessor(settings, store, broker, pool)
        log.info("jobs-worker %s taking bulk jobs", worker_id(settings))

    async def shutdown(ctx: dict[str, Any]) -> None:
        await broker.close()
        pool.close()  # arq closes the Redis pool it was given (the store's) after this

    keys = Keys(settings.redis_namespace)
    return Worker(
        functions=[
            func(
                run_bulk_job,
                name=FUNCTION,
                timeout=settings.bulk_job_timeout_s + FINISH_MARGIN_S,
                max_tries=MAX_TRIES,
            )
        ],
        queue_name=keys.bulk_queue(),
        redis_pool=store.redis,
        job_serializer=dumps,
        job_deserializer=loads,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=MAX_JOBS,
        keep_result=settings.bulk_result_ttl_s,
        health_check_interval=HEALTH_INTERVAL_S,
        health_check_key=keys.bulk_health(worker_id(settings)),
        job_completion_wait=COMPLETION_WAIT_S,
    )


async def serve_jobs_worker(settings: Settings) -> None:
    worker = build_worker(settings)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        log.info("jobs-worker stopped")  # SIGTERM/SIGINT: arq cancelled its main task
    finally:
        await worker.close()


async def healthy(settings: Settings) -> bool:
    """This host's jobs-worker wrote its arq health-check key within the last interval."""
    client = redis_client(settings)
    try:
        key = Keys(settings.redis_namespace).bulk_health(worker_id(settings))
        return bool(await client.exists(key))
    except RedisError:
        return False
    finally:
        with contextlib.suppress(RedisError):
            await client.aclose()

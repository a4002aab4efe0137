"""The `resnet-serve worker` process: metrics server, model loading and warm-up, Redis
connections, signals, and leaving at once when an inference hangs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from resnet_serve.shared.heap import freeze_startup_heap
from resnet_serve.shared.metrics import WORKER, Metrics
from resnet_serve.shared.redis_client import redacted, redis_client
from resnet_serve.shared.settings import Settings
from resnet_serve.shared.supervise import reconnecting
from resnet_serve.worker.failures import WorkerFailed
from resnet_serve.worker.model.loading import load_model
from resnet_serve.worker.redis_worker import READ_BLOCK_MS, RedisWorker
from resnet_serve.worker.watchdog import check_batch_time

log = logging.getLogger(__name__)


async def serve_worker(settings: Settings) -> None:
    """`resnet-serve worker`: load and warm the model, then take jobs until SIGTERM."""
    from prometheus_client import start_http_server

    metrics = Metrics(roles=(WORKER,))
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, settings.host, metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
    model = await asyncio.to_thread(load_model, settings)
    settings = model.fitted(settings)  # warm-up may lower max_batch
    refusal = check_batch_time(settings, model.max_batch_s)
    if refusal:
        model.close()
        raise WorkerFailed(refusal, exit_code=2)
    client = redis_client(settings)
    blocking = redis_client(settings, block_s=READ_BLOCK_MS / 1000)
    worker = RedisWorker(settings, metrics, model, client, blocking)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    url = redacted(settings.redis_url.get_secret_value())
    log.info("worker %s serving %s from %s", worker.worker_id, model.info.name, url)
    try:
        await _connect(worker, url)
        freeze_startup_heap()
        await worker.run()
    except WorkerFailed as exc:
        if exc.hung:
            # The inference thread cannot be stopped, and the interpreter would wait for
            # it at exit: the jobs are handed back, so leave now.
            log.critical("exiting with status %d: %s", exc.exit_code, exc)
            logging.shutdown()
            os._exit(exc.exit_code)
        raise
    finally:
        model.close()
        await client.aclose()
        await blocking.aclose()
    log.info("worker %s stopped", worker.worker_id)


async def _connect(worker: RedisWorker, url: str) -> None:
    what = f"reach Redis at {url}"
    await reconnecting(what, worker.ensure_group, until=lambda: worker.stopping, once=True)

"""The batch loop: take batches from a queue, run the engine off the event loop, deliver.

Shared by the in-process broker and the Redis worker: both hand it a queue of jobs and a
`deliver` coroutine, and it owns nothing else. A batch's outcomes are delivered together,
so the Redis worker publishes and acknowledges them in one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from resnet_serve.shared.errors import DeadlineExceeded, InferenceFailed, ServeError
from resnet_serve.shared.jobs import Job, Prediction, Result
from resnet_serve.shared.metrics import Metrics
from resnet_serve.worker.batching import next_batch
from resnet_serve.worker.model.loading import LoadedModel

log = logging.getLogger(__name__)

Outcome = Result | ServeError
Deliver = Callable[[list[tuple[Job, Outcome]]], Awaitable[None]]


def top_k(probabilities: np.ndarray, k: int, labels: Sequence[str]) -> list[Prediction]:
    k = min(k, probabilities.shape[0])
    best = np.argpartition(probabilities, -k)[-k:]
    best = best[np.argsort(probabilities[best])[::-1]]
    return [Prediction(int(i), labels[i], float(probabilities[i])) for i in best]


class BatchRunner:
    def __init__(
        self,
        model: LoadedModel,
        queue: asyncio.Queue[Job],
        deliver: Deliver,
        *,
        max_batch: int,
        max_batch_wait_ms: float,
        metrics: Metrics,
        pipeline_depth: int = 1,
    ) -> None:
        self.model = model
        self.queue = queue
        self.deliver = deliver
        self.max_batch = max_batch
        self.max_wait_s = max_batch_wait_ms / 1000
        self.metrics = metrics
        metrics.start_model(model.manifest.name)
        self.images_per_s = 0.0  # smoothed drain rate, for Retry-After
        self.busy = False  # between taking a batch and delivering its outcomes
        # Batches taken at once. Above 1, the next batch waits in the engine's thread
        # while this one runs, so the engine does not idle while the event loop is busy
        # (a gateway refusing a flood of requests in the same process): the engine thread
        # goes from batch to batch without a round trip through the loop.
        self.pipeline_depth = pipeline_depth
        self._active = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")

    def start_thread(self) -> None:
        """Start the engine's thread now (a thread inherits its creator's priority)."""
        self._executor.submit(lambda: None).result()

    async def run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                batch = await next_batch(self.queue, self.max_batch, self.max_wait_s)
                self._active += 1
                self.busy = True
                task = asyncio.create_task(self._process(batch))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if len(in_flight) >= self.pipeline_depth:
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for finished in done:
                        finished.result()  # a failed delivery stops the runner, as before
        finally:
            for task in in_flight:
                task.cancel()
            for task in list(in_flight):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._executor.shutdown(wait=True)

    async def _process(self, batch: list[Job]) -> None:
        try:
            await self.deliver(await self.run_batch(batch))
        finally:
            self._active -= 1
            self.busy = self._active > 0

    async def run_batch(self, batch: list[Job]) -> list[tuple[Job, Outcome]]:
        now = time.time()
        outcomes: list[tuple[Job, Outcome]] = []
        live = []
        name = self.model.manifest.name
        for job in batch:
            if job.expired(now):
                self.metrics.expired_jobs.labels(name).inc()
                outcomes.append((job, DeadlineExceeded("the deadline passed while queued")))
            else:
                live.append(job)
        for job in live:
            self.metrics.queue_wait_seconds.labels(name).observe(now - job.enqueued_at)
        if live:
            outcomes += await self._run_live(live, now)
        return outcomes

    async def _run_live(self, live: list[Job], now: float) -> list[tuple[Job, Outcome]]:
        start = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            probabilities = await loop.run_in_executor(self._executor, self._infer, live)
        except Exception as exc:
            if len(live) > 1:
                # One bad job must not fail its batch-mates: run each alone.
                log.warning("a batch of %d failed (%r); retrying one by one", len(live), exc)
                return [o for job in live for o in await self._run_live([job], now)]
            log.error("inference failed for job %s: %r", live[0].job_id, exc)
            return [(live[0], InferenceFailed(f"inference failed: {type(exc).__name__}"))]
        elapsed = time.perf_counter() - start
        self._observe(len(live), elapsed)
        version = self.model.manifest.version
        return [
            (
                job,
                Result(
                    model=self.model.manifest.name,
                    version=version,
                    predictions=top_k(row, job.top_k, self.model.labels),
                    queue_ms=(now - job.enqueued_at) * 1000,
                    inference_ms=elapsed * 1000,
                    batch_size=len(live),
                    scores=row if job.full_scores else None,
                ),
            )
            for job, row in zip(live, probabilities, strict=True)
        ]

    def _infer(self, jobs: list[Job]) -> np.ndarray:
        return self.model.engine.infer(np.stack([job.image for job in jobs]))

    def _observe(self, size: int, elapsed: float) -> None:
        name = self.model.manifest.name
        self.metrics.batch_size.labels(name).observe(size)
        self.metrics.inference_seconds.labels(name).observe(elapsed)
        rate = size / max(elapsed, 1e-6)
        self.images_per_s = rate if not self.images_per_s else 0.8 * self.images_per_s + 0.2 * rate

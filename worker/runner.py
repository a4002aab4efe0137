"""The batch loop: take batches from a queue, run the engine off the event loop, deliver.

Shared by the in-process broker and the Redis worker: both hand it a queue of jobs and a
`deliver` coroutine, and it owns nothing else. A batch's outcomes are delivered together,
so the Redis worker publishes and acknowledges them in one round trip.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from resnet_serve.shared.errors import (
    ClientClosed,
    DeadlineExceeded,
    InferenceFailed,
    ServeError,
)
from resnet_serve.shared.jobs import Job, Prediction, Result
from resnet_serve.shared.metrics import Metrics
from resnet_serve.worker.batching import WatchedQueue, next_batch
from resnet_serve.worker.engines.base import Engine, is_fatal
from resnet_serve.worker.engines.streams import part_size
from resnet_serve.worker.model.loading import LoadedModel

log = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0

Outcome = Result | ServeError
Deliver = Callable[[list[tuple[Job, Outcome]]], Awaitable[None]]
# Distinct jobs failing alone in a row, with no success between, that mean the engine
# (not the inputs) is broken.
BROKEN_AFTER_FAILURES = 3


class EngineBroken(RuntimeError):
    """The engine, not an input, failed: the runner stops and its owner hands its jobs
    back. Raised for a fatal error class, a batch whose every job also fails alone, or
    `BROKEN_AFTER_FAILURES` different jobs failing in a row."""


def top_k(probabilities: np.ndarray, k: int, labels: Sequence[str]) -> list[Prediction]:
    k = min(k, probabilities.shape[0])
    best = np.argpartition(probabilities, -k)[-k:]
    best = best[np.argsort(probabilities[best])[::-1]]
    return [Prediction(int(i), labels[i], float(probabilities[i])) for i in best]


class BatchRunner:
    def __init__(
        self,
        model: LoadedModel,
        queue: WatchedQueue[Job],
        deliver: Deliver,
        *,
        max_batch: int,
        max_batch_wait_ms: float,
        metrics: Metrics,
        on_take: Callable[[Job], bool] | None = None,
        cancelled: Callable[[Job], bool] = lambda job: False,
        streams: int = 1,
        more_coming: Callable[[], bool] = lambda: True,
    ) -> None:
        self.model = model
        self.queue = queue
        self.deliver = deliver
        self.max_batch = max_batch
        self.max_wait_s = max_batch_wait_ms / 1000
        self.metrics = metrics
        # Batches in flight at once (`inference_streams`): the engine splits each over its
        # streams (worker/engines/streams.py), and a second batch taken while the first
        # runs keeps every stream busy under a backlog.
        self.streams = streams
        metrics.start_model(model.manifest.name)
        # Smoothed drain rate of full batches (admission, Retry-After, autoscaling),
        # seeded from warm-up's largest batch (every stream busy) so that a cold start
        # is not "unknown".
        self.images_per_s = model.max_batch / model.max_batch_s if model.max_batch_s else 0.0
        self._active = 0  # streams between taking a batch and delivering its outcomes
        self.in_batch = 0  # jobs of the batches taken, until delivered
        # Jobs answered per delivered batch (monotonic time, count), the last
        # RATE_WINDOW_S, and since when the queue has not emptied: under a sustained
        # backlog, completions per second are the real drain rate, decode and HTTP
        # sharing the cores included, where engine time alone is optimistic.
        self._completed: collections.deque[tuple[float, int]] = collections.deque()
        self._backlogged_since: float | None = None
        # When each engine call now running started (monotonic): the watchdog and the
        # liveness probe judge progress from the oldest.
        self._inferring: dict[int, float] = {}
        self.slowest_batch_s = model.max_batch_s  # engine time, warm-up included
        # Called once per job as its batch is taken; False drops the job (no longer held).
        self._on_take = on_take
        # True for a job whose client left: answered ClientClosed, never inferred.
        self._cancelled = cancelled
        # False when no job is on its way to the queue: the batch window is not waited.
        self._more_coming = more_coming
        self._failed_alone: set[str] = set()
        self._executor = ThreadPoolExecutor(streams, thread_name_prefix="inference")
        self._collecting = asyncio.Lock()

    @property
    def busy(self) -> bool:
        """Between taking a batch and delivering its outcomes, in any stream."""
        return self._active > 0

    @property
    def backlogged(self) -> bool:
        """The queue did not empty when the last batch was taken."""
        return self._backlogged_since is not None

    @property
    def inferring_since(self) -> float | None:
        """When the oldest engine call now running started (monotonic), None if none."""
        return min(self._inferring.values(), default=None)

    def drain_per_s(self) -> float:
        """Images per second this runner drains: completions over the last
        RATE_WINDOW_S while a backlog lasted that long, else the engine's rate."""
        now = time.monotonic()
        while self._completed and self._completed[0][0] < now - RATE_WINDOW_S:
            self._completed.popleft()
        since = self._backlogged_since
        if since is None or now - since < RATE_WINDOW_S or not self._completed:
            return self.images_per_s
        observed = sum(n for _, n in self._completed) / RATE_WINDOW_S
        return min(self.images_per_s, observed) if self.images_per_s else observed

    def start_thread(self) -> None:
        """Start the engine's threads now (a thread inherits its creator's priority);
        each sleeps a moment so that the pool starts one per stream."""
        for future in [self._executor.submit(time.sleep, 0.01) for _ in range(self.streams)]:
            future.result()

    async def run(self) -> None:
        """Run every stream until one stops (it raises: EngineBroken...) or this is
        cancelled; the others are cancelled with it."""
        streams = [asyncio.create_task(self._stream()) for _ in range(self.streams)]
        try:
            done, _ = await asyncio.wait(streams, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in streams:
                task.cancel()
            # Not waiting: a hung inference thread must not hang the caller too.
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _stream(self) -> None:
        part = part_size(self.max_batch, self.streams)
        while True:
            async with self._collecting:  # one stream collects a batch at a time
                # Beside a running batch, the next waits for a part: a batch of one or
                # two run beside another costs more CPU per image than waiting.
                await self.queue.wait_until(lambda: not self._active or self.queue.qsize() >= part)
                batch = await next_batch(
                    self.queue, self.max_batch, self.max_wait_s, self._more_coming
                )
                self._active += 1
            taken = len(batch)
            self.in_batch += taken
            if self.queue.empty():
                self._backlogged_since = None
            elif self._backlogged_since is None:
                self._backlogged_since = time.monotonic()
            try:
                if self._on_take is not None:
                    batch = [job for job in batch if self._on_take(job)]
                if batch:
                    await self.deliver(await self.run_batch(batch))
                    self._completed.append((time.monotonic(), len(batch)))
            finally:
                self._active -= 1
                self.in_batch -= taken
                self.queue.wake()

    async def run_batch(self, batch: list[Job]) -> list[tuple[Job, Outcome]]:
        now = time.time()
        outcomes: list[tuple[Job, Outcome]] = []
        live = []
        name = self.model.manifest.name
        for job in batch:
            if job.expired(now):
                self.metrics.expired_jobs.labels(name).inc()
                outcomes.append((job, DeadlineExceeded("the deadline passed while queued")))
            elif self._cancelled(job):
                self.metrics.cancelled_jobs.labels(name).inc()
                outcomes.append((job, ClientClosed("the client left before inference")))
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
            key = id(live)
            self._inferring[key] = time.monotonic()
            # Calls sharing the engine's streams: each gets about that share of the rate.
            side_by_side = len(self._inferring)
            try:
                probabilities = await loop.run_in_executor(
                    self._executor, self._infer, self.model.engine, live
                )
            finally:
                del self._inferring[key]
        except Exception as exc:
            if is_fatal(exc):
                raise EngineBroken(f"fatal engine error: {exc!r}") from exc
            if len(live) > 1:
                return await self._run_alone(live, now, exc)
            log.error("inference failed for job %s: %r", live[0].job_id, exc)
            self._failed_alone.add(live[0].job_id)
            if len(self._failed_alone) >= BROKEN_AFTER_FAILURES:
                raise EngineBroken(
                    f"{len(self._failed_alone)} different jobs failed in a row: {exc!r}"
                ) from exc
            return [(live[0], InferenceFailed(f"inference failed: {type(exc).__name__}"))]
        elapsed = time.perf_counter() - start
        self._failed_alone.clear()
        self._observe(len(live), elapsed, side_by_side)
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

    async def _run_alone(
        self, live: list[Job], now: float, exc: Exception
    ) -> list[tuple[Job, Outcome]]:
        """One bad job must not fail its batch-mates: run each alone. If every one fails
        alone too, the engine is what is broken."""
        log.warning("a batch of %d failed (%r); retrying one by one", len(live), exc)
        outcomes = [o for job in live for o in await self._run_live([job], now)]
        if all(isinstance(outcome, InferenceFailed) for _, outcome in outcomes):
            raise EngineBroken(f"every job of a batch of {len(live)} failed alone too: {exc!r}")
        return outcomes

    @staticmethod
    def _infer(engine: Engine, jobs: list[Job]) -> np.ndarray:
        return engine.infer(np.stack([job.image for job in jobs]))

    def _observe(self, size: int, elapsed: float, side_by_side: int) -> None:
        name = self.model.manifest.name
        self.metrics.batch_size.labels(name).observe(size)
        self.metrics.inference_seconds.labels(name).observe(elapsed)
        self.slowest_batch_s = max(self.slowest_batch_s, elapsed)
        if size < self.max_batch:
            # A short queue's small batch says how busy the runner is, not how fast it
            # drains a backlog (a batch of 1 may take most of a full one's time).
            return
        rate = side_by_side * size / max(elapsed, 1e-6)
        self.images_per_s = rate if not self.images_per_s else 0.8 * self.images_per_s + 0.2 * rate

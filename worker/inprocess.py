"""Standalone mode's broker: a bounded asyncio queue and a batch runner in this process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from resnet_serve.shared.admission import (
    admissible,
    budget_s,
    check_not_too_late,
    retry_after_s,
    whole_budget_s,
)
from resnet_serve.shared.broker import Reservation
from resnet_serve.shared.cpus import cpu_model_name, usable_cpus
from resnet_serve.shared.errors import (
    NotReady,
    QueueFull,
    ServeError,
    UnknownModel,
)
from resnet_serve.shared.jobs import Job, ModelInfo, Result, WorkerInfo
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings
from resnet_serve.shared.waiters import Waiters
from resnet_serve.worker.batching import WatchedQueue
from resnet_serve.worker.loop_share import LoopShareCap, split_engine_share
from resnet_serve.worker.model.loading import LoadedModel, load_model
from resnet_serve.worker.priorities import keep_other_threads_nicer, lower_loop_priority
from resnet_serve.worker.runner import BatchRunner

log = logging.getLogger(__name__)

# The loop's CPU cap (worker/loop_share.py) applies this long after a refusal.
REFUSING_S = 1.0


class InProcessBroker:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        loader: Callable[[Settings], LoadedModel] = load_model,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._loader = loader
        self._queue: WatchedQueue[Job] = WatchedQueue(maxsize=settings.max_queue)
        self._waiters = Waiters()
        self._model: LoadedModel | None = None
        self._runner: BatchRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._nicer: asyncio.Task[None] | None = None
        self._cap: asyncio.Task[None] | None = None  # worker/loop_share.py
        self._refused_at = -REFUSING_S  # monotonic time of the latest refusal
        self._closing = False
        self._reserved = 0  # places set aside for requests still decoding
        # Jobs whose client left while they were queued: skipped when taken, and not
        # counted as work ahead meanwhile.
        self._abandoned: set[str] = set()

    async def start(self) -> None:
        # Building, loading and warming take seconds of CPU: keep the loop responsive.
        self._model = await asyncio.to_thread(self._loader, self.settings)
        self.settings = self._model.fitted(self.settings)  # warm-up may lower max_batch
        self._runner = BatchRunner(
            self._model,
            self._queue,
            self._deliver,
            max_batch=self.settings.max_batch,
            max_batch_wait_ms=self.settings.max_batch_wait_ms,
            metrics=self.metrics,
            cancelled=self._abandoned_job,
            streams=self.settings.inference_streams,
            # Only requests still decoding can join a batch: none, no window to wait.
            more_coming=lambda: self._reserved > 0,
        )
        # Warm-up timed the engine on idle cores: while full batches are not measured
        # yet, a first burst is admitted at the rate a split engine keeps when the loop
        # takes its capped share (without it, a cold start's 256-upload burst was let in
        # at the idle rate, and the refusals that followed made ~10-30 of it expire).
        if self._model.cpu_threads_per_call > 1:
            self._runner.images_per_s *= split_engine_share(self.settings.loop_max_cpu_share)
        self._runner.start_thread()
        lower_loop_priority(self.settings.loop_nice)
        self._nicer = asyncio.create_task(
            keep_other_threads_nicer(self.settings.inference_nice), name="thread-priorities"
        )
        # Held back only while it refuses with inference backlogged: the loop's own
        # admitted work (a burst of uploads at start) is never slowed.
        runner = self._runner
        cap = LoopShareCap(
            self.settings.loop_max_cpu_share * usable_cpus(),
            lambda: runner.backlogged and self._refusing(),
        )
        if cap.acts:
            self._cap = asyncio.create_task(cap.run(), name="loop-share")
        name = self._model.manifest.name
        self.metrics.queue_depth.labels(name).set_function(self._queue.qsize)
        self.metrics.max_batch.labels(name).set(self.settings.max_batch)
        self._task = asyncio.create_task(self._runner.run(), name="batch-runner")
        self._task.add_done_callback(self._runner_stopped)

    def _abandoned_job(self, job: Job) -> bool:
        """A job whose request is gone (its client hung up) is skipped before inference."""
        return not self._waiters.wanted(job.job_id)

    def _runner_stopped(self, task: asyncio.Task[None]) -> None:
        """The runner must never stop while serving: if it does, fail loudly, not silently."""
        if self._closing:
            return
        exc = task.exception() if not task.cancelled() else None
        log.critical("the batch runner stopped unexpectedly: %r", exc)
        self._waiters.fail_all(lambda: NotReady("the inference loop stopped"))

    def ready(self) -> bool:
        return (
            self._task is not None
            and not self._task.done()
            and not self._closing
            and self._model is not None
        )

    def not_ready_error(self) -> ServeError:
        if self._closing:
            return NotReady("the service is draining", retry_after_s=1)
        return NotReady("the model is loading or its inference loop stopped", retry_after_s=1)

    def models(self) -> Mapping[str, ModelInfo]:
        return {self._model.manifest.name: self._model.info} if self._model else {}

    def workers(self, model: str) -> list[WorkerInfo]:
        """This process, once its model is loaded."""
        if self._model is None or model != self._model.manifest.name:
            return []
        info = self._model.info
        rate = self._runner.images_per_s if self._runner else 0.0
        return [
            WorkerInfo(
                "standalone", info.version, info.engine, info.precision, rate, cpu_model_name()
            )
        ]

    def saturated(self) -> bool:
        """The edge gate's question, before a body is read: the queue is full, or one
        image given a whole deadline would not be done in time, by the prediction
        reserve() makes (/v1's deadline is always `request_timeout_s`). A cached answer
        is refused too: finding it means reading and hashing the body."""
        full = self._queue.qsize() + self._reserved >= self.settings.max_queue
        if not full and self._runner is not None:
            ahead, fits, _ = self._prediction(whole_budget_s(self.settings))
            full = ahead + 1 > fits
        if full:
            self._refused_at = time.monotonic()
        return full

    def _refusing(self) -> bool:
        """A request was refused within the last REFUSING_S."""
        return time.monotonic() - self._refused_at < REFUSING_S

    async def reserve(self, model: str, count: int, deadline: float | None = None) -> Reservation:
        if not self.ready():
            raise self.not_ready_error()
        if model not in self.models():
            raise UnknownModel(f"model {model!r} is not served here")
        if self._queue.qsize() + self._reserved + count > self.settings.max_queue:
            self._refused_at = time.monotonic()
            raise QueueFull("the inference queue is full", retry_after_s=self.retry_after_s(model))
        self._admit_in_time(count, deadline)
        self._reserved += count
        return Reservation(model, [str(i) for i in range(count)])

    def _admit_in_time(self, count: int, deadline: float | None) -> None:
        budget = budget_s(deadline, time.time(), self.settings.admit_within_s)
        ahead, fits, rate = self._prediction(budget)
        check_not_too_late(count, fits, budget)
        if ahead + count > fits:
            self._refused_at = time.monotonic()
            raise QueueFull(
                f"the {ahead} images queued ahead would not be done in time for this request",
                retry_after_s=retry_after_s(ahead + count - fits, rate),
            )

    def _prediction(self, budget: float | None) -> tuple[int, int, float]:
        """(images ahead of a new request, how many may be ahead of and in it for it to
        finish within `budget` seconds, the drain rate) by shared/admission.py's rule."""
        assert self._runner is not None  # ready
        rate = self._runner.drain_per_s()
        fits = admissible(rate, self.settings.max_batch / rate if rate else 0.0, budget)
        ahead = self._queue.qsize() - len(self._abandoned) + self._reserved + self._runner.in_batch
        return ahead, fits, rate

    async def release(self, reservation: Reservation) -> None:
        self._reserved -= len(reservation.places)
        reservation.places.clear()

    async def submit(self, job: Job, place: str | None = None) -> Result:
        if place is not None:
            self._reserved -= 1  # the place becomes the job's, whatever happens next
        if not self.ready():
            raise self.not_ready_error()
        if job.model not in self.models():
            raise UnknownModel(f"model {job.model!r} is not served here")
        with self._waiters.waiting(job.job_id) as future:
            full = self._queue.qsize() + self._reserved >= self.settings.max_queue
            try:
                if full and place is None:
                    raise asyncio.QueueFull
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                raise QueueFull(
                    "the inference queue is full", retry_after_s=self.retry_after_s(job.model)
                ) from None
            try:
                return await self._waiters.outcome(future, job.deadline)
            except asyncio.CancelledError:  # the client left (api/pipeline/hangups.py)
                self._abandoned.add(job.job_id)
                raise

    def retry_after_s(self, model: str | None = None) -> float:
        """When the images beyond what a new request's whole deadline (and the queue's
        size) allow are likely drained, by the prediction admission makes: jittered,
        at least 1 s."""
        if self._runner is None:
            return 1.0
        ahead, fits, rate = self._prediction(whole_budget_s(self.settings))
        return retry_after_s(ahead + 1 - min(fits, self.settings.max_queue), rate)

    async def _deliver(self, outcomes: list[tuple[Job, Result | ServeError]]) -> None:
        for job, outcome in outcomes:
            self._abandoned.discard(job.job_id)  # left after its batch was taken
            self._waiters.resolve(job.job_id, outcome)

    async def close(self) -> None:
        """Drain: stop admitting, let queued jobs finish (bounded), then stop the runner."""
        self._closing = True
        await self._waiters.drain(self.settings.request_timeout_s)
        for task in (self._nicer, self._cap):
            if task is not None:
                task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._model is not None:
            self._model.close()

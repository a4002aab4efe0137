"""One bulk job through the inference streams. Each image is decoded here and submitted
to its model's stream through RedisBroker.submit, exactly like an interactive request,
so inference workers batch bulk and interactive images together. Each image's result or
error is stored as soon as it is known: a bad image is that image's error and the job
goes on, and a job cut off midway resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from arq.worker import Retry
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from resnet_serve.api.broker.redis_broker import RedisBroker
from resnet_serve.api.bulk.store import DONE, FAILED, BulkStore, JobState
from resnet_serve.api.pipeline.decoding import DecodePool
from resnet_serve.shared.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    JobTimeout,
    NotReady,
    NoWorkers,
    QueueFull,
    ServeError,
    UnknownModel,
    UploadExpired,
)
from resnet_serve.shared.jobs import Job, ModelInfo, Result
from resnet_serve.shared.preprocess import PreprocessConfig, config_for
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)

# Worth trying again: the queue is busy or briefly unreachable. Anything else (a bad
# image, an engine failure already retried by the worker) is the image's answer.
TRANSIENT = (QueueFull, NotReady, BrokerUnavailable, DeadlineExceeded, NoWorkers)
SUBMIT_ATTEMPTS = 8
SUBMIT_WITHIN_S = 300.0
MODEL_POLL_S = 0.5
REDIS_RETRY_S = 5.0
# A model no worker announces for this long, while others are served, is not coming.
MODEL_MISSING_S = 60.0


class BulkJobProcessor:
    def __init__(
        self, settings: Settings, store: BulkStore, broker: RedisBroker, pool: DecodePool
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.pool = pool
        # Images in flight in this process, over all its jobs: bounds memory and keeps
        # a bulk job from flooding the stream that interactive requests share.
        self._running = asyncio.Semaphore(settings.bulk_concurrency)

    async def run(self, job_id: str) -> dict[str, Any]:
        try:
            return await self._run(job_id)
        except RedisError as exc:
            # Lost Redis midway: arq runs the job again later, from the images not done.
            log.warning("bulk job %s: Redis failed (%r); it will run again", job_id, exc)
            raise Retry(defer=REDIS_RETRY_S) from exc

    async def _run(self, job_id: str) -> dict[str, Any]:
        state = await self.store.load(job_id)
        if state is None:
            log.warning("bulk job %s expired before it ran", job_id)
            return {"job_id": job_id, "status": "expired"}
        if state.status in (DONE, FAILED):
            return _summary(state)  # a duplicate delivery of a finished job
        error: ServeError | None = None
        try:
            async with asyncio.timeout(self.settings.bulk_job_timeout_s):
                info = await self._model(state.model)
                await self.store.mark_running(state)
                await self._images(state, info)
        except TimeoutError:
            error = JobTimeout(
                f"the job did not finish within bulk_job_timeout_s "
                f"({self.settings.bulk_job_timeout_s:g} s); finished images are kept"
            )
        except ServeError as exc:
            error = exc
        await self.store.finish(state, error)
        state.status = FAILED if error else DONE
        log.info("bulk job %s %s: %d images", job_id, state.status, len(state.filenames))
        return _summary(state)

    async def _model(self, name: str) -> ModelInfo:
        """The model's description, once the broker sees a worker serving it; waits for
        one (bounded by the job's timeout) so jobs survive workers scaled to zero."""
        waited_since = time.monotonic()
        while True:
            if self.broker.ready() and name in self.broker.models():
                return self.broker.models()[name]
            if self.broker.ready() and time.monotonic() - waited_since > MODEL_MISSING_S:
                served = ", ".join(self.broker.models())
                raise UnknownModel(f"model {name!r} is not served (served: {served})")
            await asyncio.sleep(MODEL_POLL_S)

    async def _images(self, state: JobState, info: ModelInfo) -> None:
        pending = [i for i in range(len(state.filenames)) if i not in state.results]
        if pending and not await self.store.has_images(state.job_id):
            raise UploadExpired("the images expired in Redis before a jobs-worker ran them")
        config = config_for(info, self.settings)
        tasks: list[asyncio.Task[None]] = []
        try:
            for index in pending:
                await self._running.acquire()
                task = asyncio.create_task(self._image(state, index, info, config))
                # A callback, not `finally`: a task cancelled before it starts never
                # runs its body, and its place must come back all the same.
                task.add_done_callback(lambda _: self._running.release())
                tasks.append(task)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _image(
        self, state: JobState, index: int, info: ModelInfo, config: PreprocessConfig
    ) -> None:
        data = await self.store.image(state.job_id, index)
        request_id = f"bulk-{state.job_id}-{index}"
        try:
            if data is None:
                raise UploadExpired("the image expired in Redis before it was run")
            image, _ = await self.pool.preprocess(data, config)
            result = await self._submit(image, info.name, state.top_k, request_id)
        except ServeError as exc:
            outcome: dict[str, Any] = {"error": {"code": exc.code, "message": exc.message}}
        else:
            outcome = _outcome(result)
        await self.store.record(state.job_id, index, outcome)

    async def _submit(self, image: Any, model: str, top_k: int, request_id: str) -> Result:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT),
            wait=_wait,
            stop=stop_after_attempt(SUBMIT_ATTEMPTS) | stop_after_delay(SUBMIT_WITHIN_S),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                job = Job(
                    request_id=request_id,
                    model=model,
                    image=image,
                    top_k=top_k,
                    deadline=time.time() + self.settings.request_timeout_s,
                )
                return await self.broker.submit(job)
        raise AssertionError("unreachable: tenacity re-raises the last error")


_backoff = wait_exponential_jitter(initial=0.2, max=10.0, jitter=0.2)


def _wait(state: RetryCallState) -> float:
    """Exponential backoff, never sooner than the broker's Retry-After."""
    error = state.outcome.exception() if state.outcome else None
    return max(getattr(error, "retry_after_s", None) or 0.0, _backoff(state))


def _outcome(result: Result) -> dict[str, Any]:
    predictions = [[p.index, p.label, p.score] for p in result.predictions]
    return {"version": result.version, "predictions": predictions}


def _summary(state: JobState) -> dict[str, Any]:
    return {"job_id": state.job_id, "status": state.status, "images": len(state.filenames)}

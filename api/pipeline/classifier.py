"""One image through the gateway: cache, admission, decode pool, broker, response.

A queue place is reserved before the image is decoded (admission before work): a
refused request answers 503 at once and costs no decode.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from resnet_serve.api.pipeline.admission import queue_places
from resnet_serve.api.pipeline.cache import Key, ResponseCache
from resnet_serve.api.pipeline.decoding import DecodePool
from resnet_serve.api.pipeline.schemas import (
    BatchItem,
    ClassifyResponse,
    ErrorDetail,
    PredictionOut,
    TimingsOut,
)
from resnet_serve.api.pipeline.statistics import InferenceStatistics
from resnet_serve.api.pipeline.uploads import Upload
from resnet_serve.shared.broker import Broker, Reservation
from resnet_serve.shared.errors import ServeError, UnknownModel
from resnet_serve.shared.jobs import Job, ModelInfo, Result
from resnet_serve.shared.preprocess import config_for
from resnet_serve.shared.settings import Settings


@dataclass(frozen=True, slots=True)
class Target:
    """What a job answers: its top-k, and the whole probability vector when asked."""

    top_k: int
    full_scores: bool = False


class Classifier:
    def __init__(
        self, settings: Settings, broker: Broker, pool: DecodePool, cache: ResponseCache
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.pool = pool
        self.cache = cache
        self.statistics = InferenceStatistics()  # KServe v2's, per model

    def check_ready(self) -> None:
        if not self.broker.ready():
            raise self.broker.not_ready_error()

    def model(self, name: str | None) -> ModelInfo:
        self.check_ready()
        name = name or self.settings.model
        info = self.broker.models().get(name)
        if info is None:
            served = ", ".join(self.broker.models())
            raise UnknownModel(
                f"model {name!r} is not served here (served: {served}; "
                "choose one with the `model` parameter)"
            )
        return info

    async def classify(
        self,
        upload: Upload,
        info: ModelInfo,
        top_k: int,
        request_id: str,
        received_at: float,
        reservation: Reservation | None = None,
    ) -> ClassifyResponse:
        key, cached = self.cached(info, upload.data, top_k)
        if cached is not None:
            return _response(request_id, cached, 0.0, received_at, info, cached=True)
        deadline = received_at + self.settings.request_timeout_s
        if reservation is None:
            async with queue_places(self.broker, info.name, 1, deadline) as own:
                result, decode_s = await self.infer(
                    upload.data, info, Target(top_k), key, request_id, deadline, own
                )
        else:
            result, decode_s = await self.infer(
                upload.data, info, Target(top_k), key, request_id, deadline, reservation
            )
        return _response(request_id, result, decode_s * 1000, received_at, info, cached=False)

    def cached(
        self, info: ModelInfo, data: bytes, top_k: int, full_scores: bool = False
    ) -> tuple[Key | None, Result | None]:
        """(the cache key, when caching; the cached result, if any) for an encoded image."""
        if not self.cache.enabled:
            return None, None  # hashing a multi-MB file costs ~1 ms on the event loop
        key = self.cache.key(info.name, data, top_k, full_scores)
        return key, self.cache.get(key, info.version)

    async def infer(
        self,
        data: bytes,
        info: ModelInfo,
        target: Target,
        key: Key | None,
        request_id: str,
        deadline: float,
        reservation: Reservation,
    ) -> tuple[Result, float]:
        """(the result, seconds decoding): one encoded image decoded in the pool and
        inferred on a reserved queue place; cached under `key`."""
        image, decode_s = await self.pool.preprocess(data, config_for(info, self.settings))
        result = await self.submit(image, info, target, request_id, deadline, reservation)
        if key:
            self.cache.put(key, result)
        return result, decode_s

    async def submit(
        self,
        image: np.ndarray,
        info: ModelInfo,
        target: Target,
        request_id: str,
        deadline: float,
        reservation: Reservation,
    ) -> Result:
        """A model-ready image's result, on a reserved queue place."""
        job = Job(
            request_id=request_id,
            model=info.name,
            image=image,
            top_k=target.top_k,
            deadline=deadline,
            full_scores=target.full_scores,
        )
        return await self.broker.submit(job, reservation.take())

    async def classify_many(
        self,
        uploads: list[Upload],
        info: ModelInfo,
        top_k: int,
        request_id: str,
        received_at: float,
    ) -> list[BatchItem]:
        """One result or one error per upload; a bad file does not fail the others."""
        outcomes = await asyncio.gather(
            *(self.classify(u, info, top_k, request_id, received_at) for u in uploads),
            return_exceptions=True,
        )
        items = []
        for upload, outcome in zip(uploads, outcomes, strict=True):
            if isinstance(outcome, ServeError):
                detail = ErrorDetail(
                    code=outcome.code, message=outcome.message, request_id=request_id
                )
                items.append(BatchItem(filename=upload.filename, error=detail))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                items.append(BatchItem(filename=upload.filename, result=outcome))
        return items


def _response(
    request_id: str,
    result: Result,
    decode_ms: float,
    received_at: float,
    info: ModelInfo,
    *,
    cached: bool,
) -> ClassifyResponse:
    return ClassifyResponse(
        request_id=request_id,
        model=result.model,
        version=result.version,
        predictions=[
            PredictionOut(index=p.index, label=p.label, score=p.score) for p in result.predictions
        ],
        timings=TimingsOut(
            decode_ms=round(decode_ms, 3),
            queue_ms=0.0 if cached else round(result.queue_ms, 3),
            inference_ms=0.0 if cached else round(result.inference_ms, 3),
            total_ms=round((time.time() - received_at) * 1000, 3),
        ),
        batch_size=result.batch_size,  # the call that computed it, cached or not
        cached=cached,
        weights="random" if info.random_weights else "pretrained",
    )

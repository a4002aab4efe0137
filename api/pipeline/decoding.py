"""Decode uploads in a bounded thread pool, never on the event loop, within a budget of
decoding bytes in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFile

from resnet_serve.api.limits import malloc
from resnet_serve.api.limits.budget import ByteBudget
from resnet_serve.shared.errors import QueueFull, TooManyPixels
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.preprocess import (
    PreprocessConfig,
    finish,
    open_image,
    working_set_bytes,
)

TRIM_INTERVAL_S = 1.0


class DecodePool:
    """A fixed number of decode threads, a cap on images waiting for one of them, and a
    budget of decoding bytes: an image's header is read first (its own small thread),
    its decoder's peak working set reserved, and only then are its pixels decoded.

    Pillow releases the GIL while decoding and resampling, so threads use every core.
    """

    def __init__(
        self, threads: int, max_pending: int, metrics: Metrics, budget: ByteBudget
    ) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self._headers = ThreadPoolExecutor(1, thread_name_prefix="image-header")
        self._max_pending = max_pending
        self._pending = 0
        self._metrics = metrics
        self.budget = budget
        self._trimmed_at = 0.0
        # Started now, so they keep the priority of the thread building the pool (the
        # standalone server lowers its event loop's priority later).
        for _ in range(threads):
            self._executor.submit(time.sleep, 0.01)
        self._headers.submit(time.sleep, 0)

    async def preprocess(self, data: bytes, config: PreprocessConfig) -> tuple[np.ndarray, float]:
        """The model-ready uint8 crop and the seconds spent decoding it."""
        if self._pending >= self._max_pending:
            raise QueueFull("too many images waiting to be decoded", retry_after_s=1)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(self._headers, open_image, data, config)
            try:
                cost = self._admit(image)
                await self.budget.acquire(cost)
            except BaseException:
                image.close()
                raise
            return await self._decode(image, config, cost)
        finally:
            self._pending -= 1

    def _admit(self, image: ImageFile.ImageFile) -> int:
        cost = working_set_bytes(image)
        if not self.budget.fits(cost):
            width, height = image.size
            raise TooManyPixels(
                f"decoding this {width}x{height} {image.mode} image needs about "
                f"{cost >> 20} MiB; this server decodes at most {self.budget.capacity >> 20} "
                "MiB at once"
            )
        return cost

    async def _decode(
        self, image: Image.Image, config: PreprocessConfig, cost: int
    ) -> tuple[np.ndarray, float]:
        loop = asyncio.get_running_loop()
        work: Future[tuple[np.ndarray, float]] = self._executor.submit(self._timed, image, config)

        def done(_: object) -> None:
            # The budget comes back when the thread lets go of the pixels, not when the
            # awaiting request goes away (a client hang-up does not stop a decode).
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to return
                loop.call_soon_threadsafe(self._release, cost)

        work.add_done_callback(done)
        return await asyncio.wrap_future(work)

    def _release(self, cost: int) -> None:
        self.budget.release(cost)
        now = time.monotonic()
        if self.budget.used == 0 and now - self._trimmed_at > TRIM_INTERVAL_S:
            self._trimmed_at = now
            self._headers.submit(malloc.trim)

    def _timed(self, image: Image.Image, config: PreprocessConfig) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        crop = finish(image, config)
        elapsed = time.perf_counter() - start
        self._metrics.decode_seconds.observe(elapsed)
        return crop, elapsed

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._headers.shutdown(wait=False, cancel_futures=True)

"""Decode uploads in a bounded thread pool, never on the event loop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from resnet_serve.shared.errors import QueueFull
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.preprocess import PreprocessConfig, preprocess


class DecodePool:
    """A fixed number of decode threads and a cap on images waiting for one of them.

    Pillow releases the GIL while decoding and resampling, so threads use every core.
    """

    def __init__(self, threads: int, max_pending: int, metrics: Metrics) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self._max_pending = max_pending
        self._pending = 0
        self._metrics = metrics

    async def preprocess(self, data: bytes, config: PreprocessConfig) -> tuple[np.ndarray, float]:
        """The model-ready uint8 crop and the seconds spent decoding it."""
        if self._pending >= self._max_pending:
            raise QueueFull("too many images waiting to be decoded", retry_after_s=1)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._timed, data, config)
        finally:
            self._pending -= 1

    def _timed(self, data: bytes, config: PreprocessConfig) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        image = preprocess(data, config)
        elapsed = time.perf_counter() - start
        self._metrics.decode_seconds.observe(elapsed)
        return image, elapsed

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

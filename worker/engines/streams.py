"""Streams: one model in memory, inferred on by several one-share threads at once.

On two cores an engine call split over both threads waits at every layer for the slower
thread, and the event loop (HTTP, refusals) takes a core from one of them now and then:
the other idles at the barrier. Streams run independent calls of `threads / streams`
threads each instead, so the loop costs a stream its share only.

A batch is cut into one part per stream, each run by whichever stream comes free first,
so a batch that finds the streams idle gets all of them; but no part is smaller than
MIN_PART images: a one-image call costs 10.2 ms of CPU against 9.3 for two and 8.8 for
three or four (OpenVINO INT8 ResNet-18, one thread, 2026-12-07), so a batch of two or
three runs whole on one stream and leaves the other core to decode. The runner takes a
second batch beside a running one only once a full part (`part_size`) is queued
(worker/runner.py), for the same reason.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from resnet_serve.worker.engines.base import Engine

MIN_PART = 2


def part_size(max_batch: int, streams: int) -> int:
    """Images in one stream's part of a full batch."""
    return max(1, max_batch // streams)


class Streams:
    """`engine` (opened with `threads / streams` threads per call, and safe to call from
    `streams` threads at once) behind one `infer` that cuts each batch into one part
    per stream, of at least MIN_PART images."""

    def __init__(self, engine: Engine, streams: int) -> None:
        self.engine = engine
        self.streams = streams
        self.name, self.precision, self.device = engine.name, engine.precision, engine.device
        # One thread per stream: the pool's queue hands each part to the first free one.
        # The threads carry the process's name, so they are reniced like the runner's.
        self._pool = ThreadPoolExecutor(streams, thread_name_prefix="stream")

    def infer(self, images: np.ndarray) -> np.ndarray:
        count = max(1, min(self.streams, len(images) // MIN_PART))
        futures = [self._pool.submit(self.engine.infer, p) for p in np.array_split(images, count)]
        return np.concatenate([future.result() for future in futures])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

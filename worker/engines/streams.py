"""Streams: one model in memory, inferred on by several one-share threads at once.

On two cores an engine call split over both threads waits at every layer for the slower
thread, and the event loop (HTTP, refusals) takes a core from one of them now and then:
the other idles at the barrier. Streams run independent calls of `threads / streams`
threads each instead, so the loop costs a stream its share only. A batch is cut into
one part per stream and each part runs on whichever stream comes free first: a batch
that finds the streams idle gets all of them (about the latency of one wide call), and
under a backlog the batches' parts interleave and no stream waits for another.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from resnet_serve.worker.engines.base import Engine


class Streams:
    """`engine` (opened with `threads / streams` threads per call, and safe to call from
    `streams` threads at once) behind one `infer` that splits each batch across them."""

    def __init__(self, engine: Engine, streams: int) -> None:
        self.engine = engine
        self.streams = streams
        self.name, self.precision, self.device = engine.name, engine.precision, engine.device
        # One thread per stream: the pool's queue hands each part to the first free one.
        # The threads carry the process's name, so they are reniced like the runner's.
        self._pool = ThreadPoolExecutor(streams, thread_name_prefix="stream")

    def infer(self, images: np.ndarray) -> np.ndarray:
        parts = np.array_split(images, min(len(images), self.streams))
        futures = [self._pool.submit(self.engine.infer, part) for part in parts]
        return np.concatenate([future.result() for future in futures])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

"""Collect a batch: block for the first job, then fill until full or the window closes,
or until nothing more is on its way.

A plain function over a queue it is given, so the in-process and Redis brokers share it
and tests need neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WatchedQueue(asyncio.Queue[T]):
    """An asyncio.Queue a taker can wait on until enough is queued (`wait_until`), woken
    by every put and by `wake()` (whatever else its condition reads has changed)."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._changed = asyncio.Event()

    def _put(self, item: T) -> None:  # asyncio.Queue's hook, called by every put
        super()._put(item)
        self._changed.set()

    def wake(self) -> None:
        self._changed.set()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._changed.clear()
            await self._changed.wait()


async def next_batch(
    queue: asyncio.Queue[T],
    max_batch: int,
    max_wait_s: float,
    more_coming: Callable[[], bool] = lambda: True,
) -> list[T]:
    """Up to `max_batch` items: the first waits indefinitely, the rest at most
    `max_wait_s` counted from when the first arrived (mosec's get_batch), and not at all
    once `more_coming()` says no item is on its way (a lone request is not held back
    for batch-mates that cannot come)."""
    batch = [await queue.get()]
    loop = asyncio.get_running_loop()
    window_closes = loop.time() + max_wait_s
    while len(batch) < max_batch:
        if not queue.empty():
            batch.append(queue.get_nowait())
            continue
        remaining = window_closes - loop.time()
        if remaining <= 0 or not more_coming():
            break
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return batch

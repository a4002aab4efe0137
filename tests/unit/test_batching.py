"""The batcher: block for the first job, then fill to max_batch or until the window closes."""

from __future__ import annotations

import asyncio
import time

import pytest

from resnet_serve.worker.batching import next_batch


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_takes_what_is_queued_up_to_max_batch() -> None:
    async def scenario() -> tuple[list[int], int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(10):
            queue.put_nowait(i)
        batch = await next_batch(queue, max_batch=4, max_wait_s=1.0)
        return batch, queue.qsize()

    batch, left = run(scenario())
    assert batch == [0, 1, 2, 3]
    assert left == 6


def test_blocks_for_the_first_job_without_a_timeout() -> None:
    async def scenario() -> tuple[list[int], float]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, queue.put_nowait, 7)
        start = time.monotonic()
        batch = await next_batch(queue, max_batch=8, max_wait_s=0.0)
        return batch, time.monotonic() - start

    batch, waited = run(scenario())
    assert batch == [7]
    assert waited >= 0.25


def test_window_is_counted_from_the_first_job() -> None:
    async def scenario() -> tuple[list[int], float]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, queue.put_nowait, 1)
        loop.call_later(0.25, queue.put_nowait, 2)  # inside the 0.1 s window
        loop.call_later(0.6, queue.put_nowait, 3)  # after it closed
        start = time.monotonic()
        batch = await next_batch(queue, max_batch=8, max_wait_s=0.1)
        return batch, time.monotonic() - start

    batch, elapsed = run(scenario())
    assert batch == [1, 2]
    assert 0.28 <= elapsed < 0.6  # closed by the window, not by the third arrival


def test_stops_as_soon_as_full_without_waiting_for_the_window() -> None:
    async def scenario() -> float:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(3):
            queue.put_nowait(i)
        start = time.monotonic()
        await next_batch(queue, max_batch=3, max_wait_s=5.0)
        return time.monotonic() - start

    assert run(scenario()) < 0.5


@pytest.mark.parametrize("arrivals", [1, 5, 16])
def test_no_job_is_lost_when_the_window_times_out(arrivals: int) -> None:
    async def scenario() -> list[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i in range(arrivals):
            loop.call_later(0.001 * i, queue.put_nowait, i)
        seen: list[int] = []
        while len(seen) < arrivals:
            seen += await next_batch(queue, max_batch=4, max_wait_s=0.002)
        return seen

    assert run(scenario()) == list(range(arrivals))


def test_a_lone_job_is_not_held_for_batch_mates_that_cannot_come() -> None:
    async def scenario() -> tuple[list[int], float]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(0)
        start = time.monotonic()
        batch = await next_batch(queue, max_batch=8, max_wait_s=5.0, more_coming=lambda: False)
        return batch, time.monotonic() - start

    batch, waited = run(scenario())
    assert batch == [0]
    assert waited < 0.5


def test_the_window_is_waited_while_more_is_on_its_way() -> None:
    async def scenario() -> tuple[list[int], float]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(0)
        on_its_way = [1, 2]
        loop = asyncio.get_running_loop()

        def arrive() -> None:
            queue.put_nowait(on_its_way.pop(0))

        loop.call_later(0.05, arrive)
        loop.call_later(0.1, arrive)
        start = time.monotonic()
        batch = await next_batch(
            queue, max_batch=8, max_wait_s=5.0, more_coming=lambda: bool(on_its_way)
        )
        return batch, time.monotonic() - start

    # Both came within the window; once none was on its way, the batch went at once.
    batch, waited = run(scenario())
    assert batch == [0, 1, 2]
    assert waited < 2.5

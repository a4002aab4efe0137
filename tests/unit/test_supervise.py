"""Background loops end when their process stops, even when a cancellation is lost on
the way (a Redis command whose own timeout fires at the same moment turns it into a
TimeoutError, which a reconnecting loop treats as an outage and survives)."""

from __future__ import annotations

import asyncio
import time

from resnet_serve.shared.supervise import cancel_all


async def _swallows_one_cancellation() -> None:
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # as a timeout racing the cancel does


def test_cancel_all_ends_a_loop_that_swallowed_its_first_cancellation() -> None:
    async def main() -> float:
        task = asyncio.create_task(_swallows_one_cancellation())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await cancel_all([task], timeout_s=5)
        assert task.cancelled()
        return time.perf_counter() - started

    assert asyncio.run(main()) < 2.5  # one more cancel, not the whole timeout


def test_a_single_cancel_would_have_waited_forever() -> None:
    async def main() -> bool:
        task = asyncio.create_task(_swallows_one_cancellation())
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.5)
        task.cancel()  # clean up
        await asyncio.wait([task], timeout=1)
        return bool(done)

    assert asyncio.run(main()) is False

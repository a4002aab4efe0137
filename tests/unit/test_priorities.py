"""Standalone serve: the event loop's thread keeps its priority, every other thread of
the process (engine, decode pool, started before or after) runs `nice` nicer."""

from __future__ import annotations

import asyncio
import os
import threading

from resnet_serve.worker import priorities


def test_other_threads_are_made_nicer_and_the_loop_is_not() -> None:
    started = threading.Event()
    stop = threading.Event()
    ids: list[int] = []

    def engine_thread() -> None:
        ids.append(threading.get_native_id())
        started.set()
        stop.wait(10)

    async def run() -> tuple[int, int]:
        loop_thread = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, loop_thread)
        worker = threading.Thread(target=engine_thread)
        worker.start()
        started.wait(5)
        task = asyncio.create_task(priorities.keep_other_threads_nicer(5))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            return before, os.getpriority(os.PRIO_PROCESS, ids[0])
        finally:
            assert os.getpriority(os.PRIO_PROCESS, loop_thread) == before
            stop.set()
            worker.join()

    before, engine = asyncio.run(run())
    assert engine == min(before + 5, 19)

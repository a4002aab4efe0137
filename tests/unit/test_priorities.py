"""Standalone serve: the event loop's thread keeps its priority, the process's other
compute threads (engine, decode pool, started before or after) run `nice` nicer, and
threads that name themselves (gRPC's event engine) keep theirs."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from resnet_serve.worker import priorities


def test_other_threads_are_made_nicer_and_the_loop_is_not() -> None:
    started = threading.Event()
    stop = threading.Event()
    named = threading.Event()
    ids: list[int] = []

    def engine_thread() -> None:
        ids.append(threading.get_native_id())
        started.set()
        stop.wait(10)

    def named_thread() -> None:  # as gRPC's event engine names its threads
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("event_engine")
        ids.append(threading.get_native_id())
        named.set()
        stop.wait(10)

    async def run() -> tuple[int, int, int]:
        loop_thread = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, loop_thread)
        worker = threading.Thread(target=engine_thread)
        worker.start()
        started.wait(5)
        io = threading.Thread(target=named_thread)
        io.start()
        await asyncio.to_thread(named.wait, 5)
        task = asyncio.create_task(priorities.keep_other_threads_nicer(5))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            return (
                before,
                os.getpriority(os.PRIO_PROCESS, ids[0]),
                os.getpriority(os.PRIO_PROCESS, ids[1]),
            )
        finally:
            assert os.getpriority(os.PRIO_PROCESS, loop_thread) == before
            stop.set()
            worker.join()
            io.join()

    before, engine, io_nice = asyncio.run(run())
    assert engine == min(before + 5, 19)
    assert io_nice == before

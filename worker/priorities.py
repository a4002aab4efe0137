"""CPU priorities in standalone `serve`, where the event loop and inference share cores.

Under overload the loop answers refusals (and reads, admits and answers everything
else): work of a fraction of a millisecond that should not queue behind inference. The
engine's and decode pool's threads run `inference_nice` nicer than the loop, so the
kernel runs the loop first when both want a core; inference still gets every cycle the
loop does not use (the loop's work is the same either way: only its waiting changes).
Measured: benchmarks/bench_open_loop.py, docs/reliability.md. `loop_nice` does the
opposite (the loop yields to inference), for a machine where that trade is wanted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

RENICE_EVERY_S = 1.0  # threads started later (a decode pool grows on demand) follow


def lower_loop_priority(nice: int) -> None:
    """Make this thread (the event loop) yield the CPU to the engine's threads. Threads
    started before this keep their priority; ones the loop starts later inherit it."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + nice, 19))
    except OSError as exc:
        log.warning("could not lower the event loop's priority: %r", exc)


async def keep_other_threads_nicer(nice: int) -> None:
    """The process's compute threads (Python's and the engine's, which carry the
    process's name) at least `nice` above the event loop's niceness, checked every
    RENICE_EVERY_S. Threads that name themselves (gRPC's event engine, libuv's workers:
    I/O, like the loop's) keep their priority."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    loop_thread = threading.get_native_id()
    tasks = Path("/proc/self/task")
    while True:
        target = min(os.getpriority(os.PRIO_PROCESS, loop_thread) + nice, 19)
        process_name = (tasks / str(loop_thread) / "comm").read_text()
        for name in os.listdir(tasks):
            thread = int(name)
            try:
                if (
                    thread != loop_thread
                    and (tasks / name / "comm").read_text() == process_name
                    and os.getpriority(os.PRIO_PROCESS, thread) < target
                ):
                    os.setpriority(os.PRIO_PROCESS, thread, target)
            except OSError:  # the thread ended meanwhile
                continue
        await asyncio.sleep(RENICE_EVERY_S)

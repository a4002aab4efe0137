"""Standalone serve: the event loop's share of the CPU while it refuses requests and
inference is backlogged.

A client refused with 503 may send again at once (a closed loop that ignores
Retry-After). The loop then answers refusals as fast as they come, so its refusal work
grows with its own speed and never lets up; at its higher priority (worker/priorities.py)
it holds a core that inference needed. So while the loop refuses requests and inference
is backlogged, the loop's own CPU time is held to `cores` (a token bucket: bursts up to
BURST_CPU_S pass): past it, the loop stops for the excess, and requests wait meanwhile
in the kernel's socket buffers. Otherwise (no refusals, a queue that empties, a flood
refused within the cap) nothing changes; a cap of a whole core or more never acts,
since the loop is one thread. Measured: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.02  # with MAX_PAUSE_S, holds a cap down to 0.2 cores
MAX_PAUSE_S = 0.1  # the longest the loop stops at a time
# CPU seconds the loop may run beyond its share before it is stopped: answering a
# batch's requests at once, or a short burst of arrivals, never stops it.
BURST_CPU_S = 0.1
REPORT_EVERY_S = 10.0


def split_engine_share(loop_share: float) -> float:
    """The share of its warm-up rate an engine whose calls are split over several CPU
    threads keeps while the loop uses `loop_share` of the CPUs: it loses up to twice
    that, since each operator waits at its barrier for the thread whose core the loop
    took (docs/reliability.md)."""
    return max(0.2, 1 - 2 * loop_share)


class LoopShareCap:
    """Hold the event loop that runs `run` to `cores` of CPU while `engaged()` (the
    owner's test: refusing, with inference backlogged)."""

    def __init__(self, cores: float, engaged: Callable[[], bool]) -> None:
        self.cores = cores
        self._engaged = engaged
        self.paused_s = 0.0  # wall-clock seconds the loop was stopped, in all

    @property
    def acts(self) -> bool:
        return 0 < self.cores < 1

    async def run(self) -> None:
        """Check every CHECK_EVERY_S until cancelled; a summary line every
        REPORT_EVERY_S while it stops the loop."""
        reported_at, reported_s = time.monotonic(), 0.0
        cpu, wall = time.thread_time(), time.monotonic()
        tokens = BURST_CPU_S  # CPU seconds the loop may still use beyond its share
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            used, span = time.thread_time() - cpu, time.monotonic() - wall
            if self._engaged():
                tokens = min(BURST_CPU_S, tokens + self.cores * span - used)
            else:
                tokens = BURST_CPU_S
            if tokens < 0:
                pause = min(-tokens / self.cores, MAX_PAUSE_S)
                time.sleep(pause)  # noqa: ASYNC251 (blocking on purpose: the loop is held back)
                tokens += self.cores * pause
                self.paused_s += pause
            cpu, wall = time.thread_time(), time.monotonic()
            if wall - reported_at >= REPORT_EVERY_S:
                if self.paused_s > reported_s:
                    log.warning(
                        "refusing with inference backlogged: the event loop was held to "
                        "%.2f cores, stopping %.1f s in the last %.0f s (loop_max_cpu_share)",
                        self.cores,
                        self.paused_s - reported_s,
                        wall - reported_at,
                    )
                reported_at, reported_s = wall, self.paused_s

"""Batch time: what the settings must allow for, and the watchdog for a hung inference.

The measured batch time (warm-up's largest batch, then the slowest batch served) is what
the visibility timeout is checked against at start and what the watchdog's limit grows
from: a batch running ten times longer than the slowest one seen is a hung device.
"""

from __future__ import annotations

import asyncio
import time

from resnet_serve.shared.settings import Settings
from resnet_serve.worker.runner import BatchRunner

# A derived watchdog limit is this many slowest batches, and never below the floor.
WATCHDOG_BATCHES = 10
WATCHDOG_FLOOR_S = 10.0
# Leases are renewed every third of the visibility timeout by the event loop; an engine
# that holds the GIL can delay a renewal by one batch, so a batch must fit in what is
# left: visibility_timeout_s >= 1.5 x the largest batch's time.
VISIBILITY_BATCHES = 1.5


def check_batch_time(settings: Settings, max_batch_s: float) -> str | None:
    """A sentence saying why these settings cannot hold on this engine, or None."""
    needed = VISIBILITY_BATCHES * max_batch_s
    if settings.visibility_timeout_s < needed:
        return (
            f"visibility_timeout_s is {settings.visibility_timeout_s:g} s, but a batch of "
            f"{settings.max_batch} takes {max_batch_s:.2f} s here, so leases could lapse "
            f"while a batch runs: set visibility_timeout_s to at least {needed:.2f} s "
            "or lower max_batch"
        )
    limit = settings.inference_timeout_s
    if limit and limit < 2 * max_batch_s:
        return (
            f"inference_timeout_s is {limit:g} s, but a batch of {settings.max_batch} takes "
            f"{max_batch_s:.2f} s here: the watchdog would stop healthy batches; set it "
            f"to at least {2 * max_batch_s:.2f} s, or 0 to derive it"
        )
    return None


def inference_limit_s(runner: BatchRunner, settings: Settings) -> float:
    if settings.inference_timeout_s:
        return settings.inference_timeout_s
    return max(WATCHDOG_FLOOR_S, WATCHDOG_BATCHES * runner.slowest_batch_s)


# A watchdog nap this much longer than asked, with the process's CPU clock nearly still
# meanwhile, means the whole process was stopped (SIGSTOP, a paused VM): time that says
# nothing about the engine. An engine that holds the GIL also delays the nap, but burns
# CPU while it does.
PAUSE_GAP_S = 1.0
PAUSE_CPU_SHARE = 0.5


async def hung_inference(runner: BatchRunner, settings: Settings) -> str:
    """Returns (a sentence) once an engine call has run past the limit, not counting
    time the whole process was stopped."""
    last, last_cpu = time.monotonic(), time.process_time()
    call: float | None = None
    stopped_s = 0.0  # of the current engine call
    while True:
        limit = inference_limit_s(runner, settings)
        nap = min(limit / 4, 1.0)
        await asyncio.sleep(nap)
        now, cpu = time.monotonic(), time.process_time()
        gap = now - last - nap
        stopped = gap > PAUSE_GAP_S and cpu - last_cpu < PAUSE_CPU_SHARE * gap
        last, last_cpu = now, cpu
        started = runner.inferring_since
        if started != call:
            call, stopped_s = started, 0.0
        if started is not None and stopped:
            stopped_s += min(gap, now - started)  # the part of the stop within this call
        if started is not None and now - started - stopped_s > limit:
            return f"an engine call has run {now - started - stopped_s:.1f} s, over {limit:g} s"

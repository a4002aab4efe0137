"""The event loop's CPU cap while inference is backlogged (worker/loop_share.py), on a
real event loop burning real CPU: CPU time is measured, not wall time, so a busy
machine can only make the loop use less."""

from __future__ import annotations

import asyncio
import time

from resnet_serve.worker.loop_share import MAX_PAUSE_S, LoopShareCap


async def _busy_loop(seconds: float) -> float:
    """Work in 2 ms slices, as refusals keep a flooded loop busy: the cores it used."""
    cpu, wall = time.thread_time(), time.monotonic()
    while time.monotonic() - wall < seconds:
        slice_end = time.perf_counter() + 0.002
        while time.perf_counter() < slice_end:
            pass
        await asyncio.sleep(0)
    return (time.thread_time() - cpu) / (time.monotonic() - wall)


def test_the_loop_is_held_to_its_share_only_while_inference_is_backlogged() -> None:
    backlogged = True

    async def scenario() -> tuple[float, float, float]:
        nonlocal backlogged
        cap = LoopShareCap(0.25, lambda: backlogged)
        task = asyncio.create_task(cap.run())
        held = await _busy_loop(3.0)
        paused = cap.paused_s
        backlogged = False
        await _busy_loop(0.5)
        task.cancel()
        return held, paused, cap.paused_s - paused

    held, paused, paused_after = asyncio.run(scenario())
    assert held <= 0.25 * 1.3  # (0.75 + a 0.1 burst) / 3 s at most
    assert paused >= 0.2  # it stopped the loop (about 2.2 s of the 3 s on idle cores)
    assert paused_after == 0  # no backlog: never held back


def test_a_cap_of_a_core_or_none_never_acts() -> None:
    assert LoopShareCap(0.4, lambda: True).acts
    assert not LoopShareCap(1.0, lambda: True).acts  # the loop is one thread
    assert not LoopShareCap(0.0, lambda: True).acts  # 0: no limit
    assert MAX_PAUSE_S <= 0.1  # a refusal never waits long for the loop

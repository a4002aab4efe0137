"""Long-running background loops that must not die: restart on bugs, back off on outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class Backoff:
    """Exponential delay between retries of a failing dependency, reset on success."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s
        self.failing = False

    async def wait(self) -> None:
        self.failing = True
        await asyncio.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)

    def reset(self) -> None:
        self.failing = False
        self.delay_s = self.first_s


async def reconnecting(
    what: str,
    step: Callable[[], Awaitable[object]],
    *,
    health: LoopHealth | None = None,
    on_error: Callable[[RedisError], None] | None = None,
    until: Callable[[], bool] = lambda: False,
    once: bool = False,
) -> None:
    """Run `step` again and again (once: until it first succeeds) while not `until()`.
    A Redis outage backs off exponentially, is logged once when it starts ("cannot
    <what>") and once when it ends, and turns `health` red until a step succeeds."""
    backoff = Backoff()
    while not until():
        try:
            await step()
        except RedisError as exc:
            if health is not None:
                health.fail()
            if on_error is not None:
                on_error(exc)
            if not backoff.failing:
                log.warning("cannot %s: %r; retrying", what, exc)
            await backoff.wait()
            continue
        if backoff.failing:
            log.info("can %s again", what)
        backoff.reset()
        if health is not None:
            health.beat()
        if once:
            return


async def cancel_all(tasks: list[asyncio.Task[Any]], timeout_s: float = 5.0) -> None:
    """Cancel `tasks` and wait for them, cancelling again while any still runs: a
    cancellation can be swallowed (a Redis command's own timeout firing at the same
    moment turns it into a TimeoutError the loop treats as an outage, and the loop goes
    on), and one `cancel()` would then wait forever."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    pending = [task for task in tasks if not task.done()]
    while pending and asyncio.get_running_loop().time() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.5)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())
    if pending:
        log.error("tasks still running after %.0f s of cancelling: %s", timeout_s,
                  ", ".join(task.get_name() for task in pending))  # fmt: skip


async def supervised(
    name: str, loop: Callable[[], Awaitable[None]], health: LoopHealth | None = None
) -> None:
    """Run `loop` forever; an unexpected exception is logged and the loop restarted. While
    it crash-loops, `health` says so (readiness turns red)."""
    backoff = Backoff(first_s=0.5, max_s=10.0)
    while True:
        try:
            await loop()
            log.error("background loop %s returned; restarting", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop %s failed; restarting", name)
        if health is not None:
            health.fail()
        await backoff.wait()


class LoopHealth:
    """Whether a background loop is doing its work: it calls `beat()` after each round
    that worked; a failing or stalled loop stops beating. Readiness reads `healthy`."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.last_beat: float | None = None

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def fail(self) -> None:
        self.last_beat = None

    @property
    def healthy(self) -> bool:
        return self.last_beat is not None and time.monotonic() - self.last_beat < self.stale_after_s

"""Memory budgets: bytes of request bodies and of decoding in flight, per process.

A budget is an async byte semaphore. A request reserves what it will hold before it
holds it; beyond the budget it waits briefly (FIFO) and then gets 503 with Retry-After.
A reservation larger than the whole budget can never succeed: callers turn that into a
permanent 413, so retrying does not help.

Sizes come from the cgroup's `memory.max` (the container limit): a ceiling fraction of
it, minus the process's resident set when the budgets are built (its baseline), split
between bodies and decoding. `memory_budget_bytes` overrides the measured total.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from resnet_serve.shared.errors import PayloadTooLarge, QueueFull
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)

# Of the container's limit, what baseline plus budgets may reach (the rest, to the 60%
# peak target and beyond, is slack for the allocator, Python objects per request, the
# KServe parser process and what the budgets do not see).
CEILING_FRACTION = 0.5
# Without a cgroup limit (a developer's machine): the total budget.
UNLIMITED_TOTAL_BYTES = 1024 * 1024 * 1024
BODY_SHARE = 0.4  # of the total: request bodies; the rest: decoding
MIN_BUDGET_BYTES = 16 * 1024 * 1024
_CGROUP_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def cgroup_memory_limit() -> int | None:
    """The container's memory limit in bytes, or None when there is none."""
    for path in _CGROUP_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            return int(text)
        return None
    return None


def resident_bytes() -> int:
    """This process's resident set size now."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    import resource

    return pages * resource.getpagesize()


class ByteBudget:
    """At most `capacity` bytes reserved at once; waiters are served in order."""

    def __init__(self, name: str, capacity: int, wait_s: float) -> None:
        self.name = name
        self.capacity = capacity
        self.wait_s = wait_s
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def fits(self, size: int) -> bool:
        """Whether `size` bytes could ever be reserved here."""
        return size <= self.capacity

    async def acquire(self, size: int, *, small: bool = False) -> None:
        """Reserve `size` bytes (at most `capacity`), waiting at most `wait_s`;
        QueueFull (503, Retry-After) past that. A `small` holder takes room that is free
        at once, ahead of larger waiters, so large holders cannot starve small ones."""
        if (small or not self.waiting) and self.used + size <= self.capacity:
            self.used += size
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except TimeoutError:
            if future.done() and not future.cancelled():
                return  # granted just as the wait ran out: keep it
            self._remove(entry)
            raise QueueFull(
                f"the {self.name} memory budget is in use; try again shortly", retry_after_s=1
            ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(size)
            self._remove(entry)
            raise

    def release(self, size: int) -> None:
        self.used -= size
        self._wake()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        await self.acquire(size)
        try:
            yield
        finally:
            self.release(size)

    def _remove(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(entry)
        if not entry[1].done():
            entry[1].cancel()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            size, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.used + size > self.capacity:
                return
            self._waiters.popleft()
            self.used += size
            future.set_result(None)


class Grant:
    """The body bytes one request holds, grown in steps as its body arrives and
    returned all at once when the request is done."""

    STEP_BYTES = 1024 * 1024
    # A grant of at most this share of the budget counts as small (ByteBudget.acquire).
    SMALL_SHARE = 1 / 16

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    async def grow_to(self, size: int) -> None:
        """Hold at least `size` bytes (rounded up to a step, capped at the budget)."""
        if size <= self.held:
            return
        if not self.budget.fits(size):
            raise PayloadTooLarge(
                f"the request needs {size >> 20} MiB in memory; this server holds at most "
                f"{self.budget.capacity >> 20} MiB of request bodies at once"
            )
        target = min(-(-size // self.STEP_BYTES) * self.STEP_BYTES, self.budget.capacity)
        target = max(target, size)
        small = target <= self.budget.capacity * self.SMALL_SHARE
        await self.budget.acquire(target - self.held, small=small)
        self.held = target

    def shrink_to(self, size: int) -> None:
        """Hold at most `size` bytes: what the request no longer holds goes back."""
        if 0 <= size < self.held:
            self.budget.release(self.held - size)
            self.held = size

    def close(self) -> None:
        held, self.held = self.held, 0
        if held:
            self.budget.release(held)


@contextlib.asynccontextmanager
async def body_grant(budget: ByteBudget) -> AsyncIterator[Grant]:
    grant = Grant(budget)
    try:
        yield grant
    finally:
        grant.close()


@dataclass(frozen=True, slots=True)
class Budgets:
    bodies: ByteBudget
    decoding: ByteBudget
    total_bytes: int
    source: str


def total_budget_bytes(settings: Settings) -> tuple[int, str]:
    """(bytes for bodies and decoding together, where the figure came from)."""
    if settings.memory_budget_bytes:
        return settings.memory_budget_bytes, "setting memory_budget_bytes"
    limit = cgroup_memory_limit()
    if limit is None:
        return UNLIMITED_TOTAL_BYTES, "no cgroup memory limit: default"
    baseline = resident_bytes()
    total = max(int(limit * CEILING_FRACTION) - baseline, MIN_BUDGET_BYTES)
    return total, f"cgroup memory.max {limit} x {CEILING_FRACTION} - baseline RSS {baseline}"


def build_budgets(
    settings: Settings, body_share: float = BODY_SHARE, wait_s: float | None = None
) -> Budgets:
    """The process's budgets; a process that takes no request bodies (the jobs-worker)
    gives decoding the whole total with `body_share=0`, and one with no client waiting
    may wait longer than `budget_wait_ms` for its turn."""
    total, source = total_budget_bytes(settings)
    if wait_s is None:
        wait_s = settings.budget_wait_ms / 1000
    bodies = ByteBudget("request body", int(total * body_share), wait_s)
    decoding = ByteBudget("decode", total - bodies.capacity, wait_s)
    log.info(
        "memory budgets: %d MiB for request bodies, %d MiB for decoding (%s)",
        bodies.capacity >> 20,
        decoding.capacity >> 20,
        source,
    )
    return Budgets(bodies, decoding, total, source)

"""Requests waiting for their job's outcome, by job id: one registry both brokers use.
A waiter is registered before its job is visible to anything that could answer it, so
no outcome is missed; it is resolved by the broker's delivery path, failed all at once
when the inference side is lost, and drained on close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from resnet_serve.shared.errors import DeadlineExceeded, ServeError
from resnet_serve.shared.jobs import Result


class Waiters:
    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[Result]] = {}
        self._groups: dict[str, str] = {}  # key -> its group (the job's model)

    def __len__(self) -> int:
        return len(self._futures)

    @contextmanager
    def waiting(self, key: str, group: str = "") -> Iterator[asyncio.Future[Result]]:
        """A future for `key`'s outcome, registered while the block runs."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._futures[key] = future
        self._groups[key] = group
        try:
            yield future
        finally:
            self._futures.pop(key, None)
            self._groups.pop(key, None)
            if future.done() and not future.cancelled():
                # Failed by `fail_all` while the request ended another way (its own
                # Redis error, say): retrieved here, so asyncio does not log "Future
                # exception was never retrieved" at each loss of Redis.
                future.exception()
            else:
                future.cancel()

    def wanted(self, key: str) -> bool:
        """Whether a request still waits for `key`'s outcome (its client may have gone)."""
        future = self._futures.get(key)
        return future is not None and not future.done()

    @staticmethod
    async def outcome(future: asyncio.Future[Result], deadline: float) -> Result:
        """The job's result by its deadline (wall clock), else DeadlineExceeded."""
        try:
            return await asyncio.wait_for(future, max(deadline - time.time(), 0))
        except TimeoutError:
            raise DeadlineExceeded("no result before the request deadline") from None

    def resolve(self, key: str, outcome: Result | ServeError) -> None:
        """Hand `outcome` to its waiter; none waits when the request already gave up."""
        future = self._futures.get(key)
        if future is None or future.done():
            return
        if isinstance(outcome, ServeError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def fail_all(self, error: Callable[[], ServeError], group: str | None = None) -> None:
        """Every request still waiting (in `group`, when given) gets `error()` now, not
        at its deadline."""
        for key, future in self._futures.items():
            if not future.done() and group in (None, self._groups.get(key)):
                future.set_exception(error())

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until every registered request has its outcome."""
        if self._futures:
            await asyncio.wait(list(self._futures.values()), timeout=timeout_s)

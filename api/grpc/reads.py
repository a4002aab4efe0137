"""Request messages are read only with a read slot, so bytes arriving are bounded.

gRPC takes a whole message off the wire before a handler sees it, and nothing counts
those bytes. So inference RPCs are served as streams (the wire is the same for a unary
call): a handler asks for its message only once it holds one of `slots` read slots,
and before that HTTP/2 flow control keeps what the client may send to a window. At most
`slots` x `grpc_max_message_bytes` (x2 while parsing) are in flight unaccounted; once
read, a message is charged to the body budget like an HTTP body.

A client that dribbles its message would hold a slot for as long as it likes: while
others wait for a slot, the reader that has been reading longest, past
`body_rate_grace_s`, loses its slot and its call ends (DEADLINE_EXCEEDED), as a
too-slow HTTP body does.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from resnet_serve.shared.errors import QueueFull, RequestTimeout

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class _Reader:
    started: float = field(default_factory=time.monotonic)
    evicted: asyncio.Event = field(default_factory=asyncio.Event)


class MessageReads:
    def __init__(self, slots: int, grace_s: float, wait_s: float, timeout_s: float) -> None:
        self.slots = slots
        self._grace_s = grace_s
        self._wait_s = wait_s
        self._timeout_s = timeout_s
        self._readers: collections.OrderedDict[_Reader, None] = collections.OrderedDict()
        self._freed = asyncio.Condition()

    async def read(self, message: Awaitable[T]) -> T:
        """The awaited message, read while holding a slot."""
        reader = await self._slot()
        try:
            return await self._bounded(message, reader)
        finally:
            del self._readers[reader]
            async with self._freed:
                self._freed.notify()

    async def _slot(self) -> _Reader:
        deadline = time.monotonic() + self._wait_s
        async with self._freed:
            while len(self._readers) >= self.slots:
                self._evict_slowest()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueueFull("every gRPC read slot is busy; try again", retry_after_s=1)
                try:
                    await asyncio.wait_for(self._freed.wait(), left)
                except TimeoutError:
                    continue
            reader = _Reader()
            self._readers[reader] = None
            return reader

    def _evict_slowest(self) -> None:
        oldest = next(iter(self._readers), None)
        if oldest is not None and time.monotonic() - oldest.started > self._grace_s:
            oldest.evicted.set()

    async def _bounded(self, message: Awaitable[T], reader: _Reader) -> T:
        reading = asyncio.ensure_future(message)
        evicted = asyncio.ensure_future(reader.evicted.wait())
        try:
            done, _ = await asyncio.wait(
                {reading, evicted}, timeout=self._timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if reading in done:
                return reading.result()
        finally:
            evicted.cancel()
        reading.cancel()
        raise RequestTimeout("the request message arrived too slowly")

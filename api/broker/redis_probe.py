"""Is Redis answering this gateway? A ping every `PROBE_INTERVAL_S` on its own
connection, with a timeout from `redis_loss_timeout_s`: the authority on reachability,
so requests in flight fail fast (503) when Redis dies or freezes, instead of waiting out
their deadlines, and new ones are refused at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from resnet_serve.shared.errors import BrokerUnavailable
from resnet_serve.shared.jobs import Result
from resnet_serve.shared.logs import Summarised
from resnet_serve.shared.redis_client import redis_client
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)
_redis_errors = Summarised(log)  # one line per command kind per 10 s
T = TypeVar("T")

PROBE_INTERVAL_S = 0.2


class RedisProbe:
    def __init__(self, settings: Settings, on_lost: Callable[[], None]) -> None:
        self.reachable = False
        self._on_lost = on_lost
        # A ping gets what is left of the loss timeout after one interval.
        self._timeout_s = max(settings.redis_loss_timeout_s - PROBE_INTERVAL_S, 0.1)
        self._client: Redis = redis_client(settings, timeout_s=self._timeout_s)

    def lost(self, why: object) -> None:
        """Redis is gone (seen here or by another loop): fail what waits on it."""
        if self.reachable:
            log.warning("Redis lost: %r; failing requests in flight", why)
        self.reachable = False
        self._on_lost()

    async def run(self) -> None:
        while True:
            try:
                await self._client.ping()
            except (RedisError, OSError) as exc:
                self.lost(exc)
            else:
                if not self.reachable:
                    log.info("Redis reachable")
                self.reachable = True
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def close(self) -> None:
        await self._client.aclose()


async def unless_lost(command: Awaitable[T], waiter: asyncio.Future[Result], doing: str) -> T:
    """Await a request's Redis command, unless Redis is lost first (the probe fails
    `waiter`): a command to a frozen Redis would otherwise hold the request for its
    timeouts. A Redis error is the request's 503 `broker_unavailable`."""
    task = asyncio.ensure_future(command)
    both: set[asyncio.Future[Any]] = {task, waiter}
    await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    if not task.done() and waiter.done() and not waiter.cancelled():
        lost = waiter.exception()
        if lost is not None:
            task.cancel()
            raise lost
    try:
        return await task
    except RedisError as exc:
        _redis_errors.warning(doing, "could not %s: %r", doing, exc)
        raise BrokerUnavailable("the job queue (Redis) is unreachable", retry_after_s=1) from None

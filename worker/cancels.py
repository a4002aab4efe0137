"""Jobs whose client left, as gateways announce them (api/broker/redis_broker.py): the
worker skips them before inference. Announcements missed while Redis is away only mean
the job runs for nobody, as it did before."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from resnet_serve.shared.jobs import Job
from resnet_serve.shared.supervise import reconnecting


class CancelledJobs:
    """Job ids announced cancelled, each remembered for `ttl_s` (its request's life)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._until: dict[str, float] = {}

    def add(self, job_id: str) -> None:
        now = time.monotonic()
        if len(self._until) > 10_000:  # forget the lapsed ones now and then
            self._until = {j: t for j, t in self._until.items() if t > now}
        self._until[job_id] = now + self.ttl_s

    def __call__(self, job: Job) -> bool:
        return self._until.pop(job.job_id, 0.0) > time.monotonic()


async def listen(client: Redis, channel: str, cancelled: CancelledJobs) -> None:
    """Subscribe to `channel` for good, through Redis outages."""

    async def subscribed() -> None:
        async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(channel)
            async for message in pubsub.listen():
                if message["type"] == "message":
                    cancelled.add(message["data"].decode())

    await reconnecting("hear cancelled jobs", subscribed)

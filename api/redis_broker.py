"""Distributed mode's broker, gateway side: jobs go onto a Redis stream per model, results
come back on this gateway's own reply list, drained by one background task.

Admission is one atomic script (length check + XADD), so the queue is bounded across any
number of gateways. Queue gauges and the workers-needed signal come from a monitor loop
that also decides readiness: Redis reachable and at least one model announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from redis.exceptions import RedisError

from shared import keys as k
from shared.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    NotReady,
    QueueFull,
    ServeError,
    UnknownModel,
)
from shared.jobs import Job, ModelInfo, Result
from shared.metrics import Metrics
from shared.redis_client import redacted, redis_client
from shared.settings import Settings
from shared.supervise import Backoff, supervised
from shared.wire import MalformedMessage, decode_model_info, decode_reply, encode_job

log = logging.getLogger(__name__)

# Refuse when the stream already holds `max_queue` unacknowledged jobs; otherwise add.
ADMIT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'header', ARGV[2], 'tensor', ARGV[3])
"""

# One round trip for the queue gauges; the tensors never leave the server.
PROBE = """
local length = redis.call('XLEN', KEYS[1])
local pending, oldest, added = 0, '', 0
if length > 0 then
  local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
  if type(summary) == 'table' and summary.err == nil then pending = summary[1] end
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if first[1] then oldest = first[1][1] end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
end
local now = redis.call('TIME')
return {length, pending, oldest, added, redis.call('XLEN', KEYS[2]), now[1], now[2]}
"""

MONITOR_INTERVAL_S = 1.0
REPLY_BLOCK_S = 1.0


@dataclass
class QueueState:
    """What the monitor last saw of one model's queue and its workers."""

    depth: int = 0
    in_flight: int = 0
    workers: int = 0
    capacity_per_s: float = 0.0  # images/s summed over live workers
    arrivals_per_s: float = 0.0
    added: int = 0
    seen_at: float = 0.0


class RedisBroker:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = k.Keys(settings.redis_namespace)
        self.gateway_id = uuid.uuid4().hex[:16]
        self.reply_to = self.keys.reply(self.gateway_id)
        self._client = redis_client(settings)
        self._blocking = redis_client(settings, block_s=REPLY_BLOCK_S)
        self._admit = self._client.register_script(ADMIT)
        self._probe = self._client.register_script(PROBE)
        self._waiters: dict[str, asyncio.Future[Result]] = {}
        self._models: dict[str, ModelInfo] = {}
        self._queues: dict[str, QueueState] = {}
        self._reachable = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the reply drainer and the monitor; Redis being down is not fatal here,
        readiness reports it and both loops reconnect on their own."""
        log.info("gateway %s using Redis at %s", self.gateway_id, self._url())
        self._tasks = [
            asyncio.create_task(supervised("replies", self._drain_replies), name="replies"),
            asyncio.create_task(supervised("monitor", self._monitor), name="monitor"),
        ]

    def ready(self) -> bool:
        loops_alive = bool(self._tasks) and not any(task.done() for task in self._tasks)
        return loops_alive and self._reachable and bool(self._models) and not self._closing

    def not_ready_error(self) -> ServeError:
        if self._closing:
            return NotReady("the gateway is draining", retry_after_s=1)
        if not self._reachable:
            return BrokerUnavailable("the job queue (Redis) is unreachable", retry_after_s=1)
        return NotReady("no worker has announced a model yet", retry_after_s=1)

    def models(self) -> Mapping[str, ModelInfo]:
        return self._models

    async def submit(self, job: Job) -> Result:
        if not self.ready():
            raise self.not_ready_error()
        if job.model not in self._models:
            raise UnknownModel(f"model {job.model!r} is not served here")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        # Registered before the job is visible to any worker, so no reply can be missed.
        self._waiters[job.job_id] = future
        try:
            fields = encode_job(job, self.reply_to)
            try:
                entry = await self._admit(
                    keys=[self.keys.jobs(job.model)],
                    args=[self.settings.max_queue, fields[b"header"], fields[b"tensor"]],
                )
            except RedisError as exc:
                self._reachable = False
                log.warning("could not enqueue a job: %r", exc)
                raise BrokerUnavailable(
                    "the job queue (Redis) is unreachable", retry_after_s=1
                ) from None
            if entry is None:
                raise QueueFull(
                    "the inference queue is full", retry_after_s=self.retry_after_s(job.model)
                )
            try:
                return await asyncio.wait_for(future, max(job.deadline - time.time(), 0))
            except TimeoutError:
                raise DeadlineExceeded("no result before the request deadline") from None
        finally:
            self._waiters.pop(job.job_id, None)

    def retry_after_s(self, model: str) -> float:
        state = self._queues.get(model)
        if state is None or not state.capacity_per_s:
            return 1.0
        return state.depth / state.capacity_per_s

    async def close(self) -> None:
        """Drain: stop admitting, wait for in-flight requests (bounded), stop the loops."""
        self._closing = True
        if self._waiters:
            await asyncio.wait(
                list(self._waiters.values()), timeout=self.settings.request_timeout_s
            )
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()
        await self._blocking.aclose()

    # Reply path

    async def _drain_replies(self) -> None:
        backoff = Backoff()
        while True:
            try:
                # BLMPOP: up to 256 replies per round trip (redis-py 5 mistypes blmpop).
                popped = await self._blocking.execute_command(
                    "BLMPOP", REPLY_BLOCK_S, 1, self.reply_to, "LEFT", "COUNT", 256
                )
            except RedisError as exc:
                self._reachable = False
                if not backoff.failing:
                    log.warning("reply channel lost: %r; reconnecting", exc)
                await backoff.wait()
                continue
            if backoff.failing:
                log.info("reply channel back")
            backoff.reset()
            if popped:
                self._resolve(cast(list[bytes], popped[1]))

    def _resolve(self, replies: list[bytes]) -> None:
        for data in replies:
            try:
                job_id, outcome = decode_reply(data)
            except MalformedMessage as exc:
                log.warning("dropped a reply: %s", exc)
                continue
            future = self._waiters.get(job_id)
            if future is None or future.done():
                continue  # the request already gave up (deadline or disconnect)
            if isinstance(outcome, ServeError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    # Monitor: readiness, models, queue gauges, the autoscaling signal

    async def _monitor(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._observe()
            except RedisError as exc:
                if self._reachable or not backoff.failing:
                    log.warning("Redis unreachable: %r", exc)
                self._reachable = False
                await backoff.wait()
                continue
            if backoff.failing:
                log.info("Redis reachable again")
            backoff.reset()
            self._reachable = True
            await asyncio.sleep(MONITOR_INTERVAL_S)

    async def _observe(self) -> None:
        models: dict[str, ModelInfo] = {}
        async for key in self._client.scan_iter(match=self.keys.model_info_pattern()):
            data = cast(bytes | None, await self._client.get(key))
            if data is None:
                continue
            try:
                info = decode_model_info(data)
            except MalformedMessage as exc:
                log.warning("ignored model description %s: %s", key, exc)
                continue
            models[info.name] = info
        for name in models:
            await self._observe_queue(name)
        self._models = models

    async def _observe_queue(self, model: str) -> None:
        length, pending, oldest, added, dead, secs, usecs = await self._probe(
            keys=[self.keys.jobs(model), self.keys.dead_letters(model)],
            args=[k.WORKER_GROUP],
        )
        now = int(secs) + int(usecs) / 1e6
        state = self._queues.setdefault(model, QueueState())
        state.in_flight = int(pending)
        state.depth = max(int(length) - state.in_flight, 0)
        if state.seen_at and int(added) >= state.added:
            rate = (int(added) - state.added) / max(now - state.seen_at, 1e-3)
            state.arrivals_per_s = 0.5 * state.arrivals_per_s + 0.5 * rate
        state.added, state.seen_at = int(added), now
        await self._observe_workers(model, state)

        oldest_age = now - int(oldest.split(b"-")[0]) / 1000 if oldest else 0.0
        m = self.metrics
        m.queue_depth.labels(model).set(state.depth)
        m.queue_in_flight.labels(model).set(state.in_flight)
        m.queue_oldest_age.labels(model).set(max(oldest_age, 0.0))
        m.dead_letters.labels(model).set(int(dead))
        m.workers.labels(model).set(state.workers)
        m.workers_needed.labels(model).set(self._workers_needed(state))

    async def _observe_workers(self, model: str, state: QueueState) -> None:
        keys = [key async for key in self._client.scan_iter(match=self.keys.worker_pattern(model))]
        beats = await self._client.mget(keys) if keys else []
        rates = []
        for beat in beats:
            if beat is None:
                continue  # expired between SCAN and MGET
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rates.append(float(json.loads(beat)["images_per_s"]))
        state.workers = len(rates)
        state.capacity_per_s = sum(rates)

    def _workers_needed(self, state: QueueState) -> int:
        """Workers to keep up with arrivals plus drain the backlog within the objective."""
        backlog = state.depth + state.in_flight
        if not backlog and state.arrivals_per_s < 0.01:
            return 0
        if state.capacity_per_s <= 0:
            return max(state.workers, 1)  # no throughput measured yet: keep what there is
        per_worker = state.capacity_per_s / state.workers
        drain_s = self.settings.queue_latency_objective_s
        needed = state.arrivals_per_s / per_worker + backlog / (per_worker * drain_s)
        return max(1, math.ceil(needed))

    def _url(self) -> str:
        return redacted(self.settings.redis_url.get_secret_value())

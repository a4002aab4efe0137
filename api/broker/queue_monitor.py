"""Watches each served model's job stream and workers in Redis, once a second: the
models' descriptions, the queue gauges, Retry-After and the workers-needed autoscaling
signal. Every gateway computes the same values.

The models come from the gateway's own configuration (`model`, `models`), so they stay
served through any length of scale-to-zero and a Redis flush; a worker's description
refines what the gateway knows of one (version, engine, input size) once it is seen.
No keyspace scans: per model, one script reads the stream and the worker registry
(a sorted set of registrations, pruned here), one GET reads the description."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from resnet_serve.shared import keys as k
from resnet_serve.shared.jobs import ModelInfo, WorkerInfo
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings
from resnet_serve.shared.supervise import LoopHealth, reconnecting
from resnet_serve.shared.wire import MalformedMessage, decode_model_info

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
# A request that found no worker keeps workers_needed at 1 this long, so an autoscaler
# polling every 15-30 s sees it and starts the first worker (scale from zero).
DEMAND_MEMORY_S = 60.0

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
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ms)
for _, worker in ipairs(lapsed) do
  redis.call('ZREM', KEYS[3], worker)
  redis.call('HDEL', KEYS[4], worker)
end
local live = redis.call('ZRANGE', KEYS[3], 0, -1)
local beats = {}
if #live > 0 then beats = redis.call('HMGET', KEYS[4], unpack(live)) end
return {length, pending, oldest, added, redis.call('XLEN', KEYS[2]), now[1], now[2], beats}
"""


# KEYS models. Prunes the models whose last worker's registration lapsed; returns the rest.
ANNOUNCED = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


# Until a worker describes a model, a gateway assumes the ImageNet recipe every built-in
# model uses (resize 256, crop 224, 1000 classes).
def configured_model(name: str) -> ModelInfo:
    return ModelInfo(
        name=name,
        version="unknown",
        engine="unknown",
        precision="unknown",
        input_size=224,
        resize_size=256,
        num_classes=1000,
    )


@dataclass
class QueueState:
    """What the monitor last saw of one model's queue and its workers."""

    depth: int = 0
    in_flight: int = 0
    workers: int = 0
    live: list[WorkerInfo] = field(default_factory=list)  # as their heartbeats announce
    worker_seen_at: float | None = None  # monotonic: when a live worker was last seen
    capacity_per_s: float = 0.0  # images/s summed over live workers
    arrivals_per_s: float = 0.0
    added: int = 0
    seen_at: float = 0.0


class QueueMonitor:
    def __init__(self, settings: Settings, metrics: Metrics, client: Redis) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = k.Keys(settings.redis_namespace)
        # Configured models are served whatever Redis says (scale to zero, a flush);
        # models live workers announce are served while one lives.
        self.configured = set(settings.served_models)
        self.models = {name: configured_model(name) for name in settings.served_models}
        # Called with a model each round no live worker serves it.
        self.on_no_workers: Callable[[str], None] = lambda model: None
        self._demand: dict[str, float] = {}  # model -> when a request last found no worker
        # Beats after each full round; stale after a few missed ones.
        self.health = LoopHealth(stale_after_s=3 * INTERVAL_S + 2)
        self._client = client
        self._probe = client.register_script(PROBE)
        self._announced = client.register_script(ANNOUNCED)
        self._queues: dict[str, QueueState] = {}

    def drain(self, model: str) -> tuple[float, float]:
        """(images/s its live workers drain together, one batch's time on one of them),
        as their heartbeats last said; (0, 0) while unknown."""
        state = self._queues.get(model)
        if state is None or not state.capacity_per_s or not state.workers:
            return 0.0, 0.0
        per_worker = state.capacity_per_s / state.workers
        return state.capacity_per_s, self.settings.max_batch / per_worker

    def retry_after_s(self, model: str) -> float:
        state = self._queues.get(model)
        if state is None or not state.capacity_per_s:
            return 1.0
        return state.depth / state.capacity_per_s

    async def run(self) -> None:
        await reconnecting("watch the queues", self._round, health=self.health)

    async def _round(self) -> None:
        await self._observe()
        await asyncio.sleep(INTERVAL_S)

    def workers_of(self, model: str) -> list[WorkerInfo]:
        state = self._queues.get(model)
        return list(state.live) if state else []

    def want(self, model: str) -> None:
        """A request found no worker for `model`: demand that workers_needed reports."""
        self._demand[model] = time.monotonic()

    def has_workers(self, model: str) -> bool | None:
        """Whether a live worker serves `model`; None before the first observation. A
        worker seen within one registration TTL still counts: after a Redis restart,
        workers re-register at their next heartbeat, and requests meanwhile wait."""
        state = self._queues.get(model)
        if state is None or not state.seen_at:
            return None
        if state.workers:
            return True
        ttl_s = 3 * self.settings.heartbeat_interval_s
        seen = state.worker_seen_at
        return seen is not None and time.monotonic() - seen < ttl_s

    async def _observe(self) -> None:
        announced = {m.decode() for m in await self._announced(keys=[self.keys.models()])}
        for name in announced - set(self.models):
            self.models[name] = configured_model(name)
            log.info("serving %s: a worker announced it", name)
        for name in set(self.models) - announced - self.configured:
            del self.models[name]
            self._queues.pop(name, None)
            log.info("no longer serving %s: its last worker is gone", name)
        for name in list(self.models):
            await self._describe(name)
            await self._observe_queue(name)
            if self.has_workers(name) is False:
                self.on_no_workers(name)

    async def _describe(self, model: str) -> None:
        data = cast(bytes | None, await self._client.get(self.keys.model_info(model)))
        if data is None:
            return  # keep what is known: no worker for a day, or Redis flushed
        try:
            info = decode_model_info(data)
        except MalformedMessage as exc:
            log.warning("ignored the description of %s: %s", model, exc)
            return
        if info.name == model:
            self.models[model] = info

    async def _observe_queue(self, model: str) -> None:
        length, pending, oldest, added, dead, secs, usecs, beats = await self._probe(
            keys=[
                self.keys.jobs(model),
                self.keys.dead_letters(model),
                self.keys.worker_registry(model),
                self.keys.worker_stats(model),
            ],
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
        self._observe_workers(cast(list[bytes | None], beats), state)

        oldest_age = now - int(oldest.split(b"-")[0]) / 1000 if oldest else 0.0
        m = self.metrics
        m.queue_depth.labels(model).set(state.depth)
        m.queue_in_flight.labels(model).set(state.in_flight)
        m.queue_oldest_age.labels(model).set(max(oldest_age, 0.0))
        m.dead_letters.labels(model).set(int(dead))
        m.workers.labels(model).set(state.workers)
        needed = self._workers_needed(state)
        if not state.workers and time.monotonic() - self._demand.get(model, -1e9) < DEMAND_MEMORY_S:
            needed = max(needed, 1)  # requests were turned away or are waiting: wake one
        m.workers_needed.labels(model).set(needed)

    @staticmethod
    def _observe_workers(beats: list[bytes | None], state: QueueState) -> None:
        state.live = [w for w in map(_worker_info, beats) if w is not None]
        state.workers = len(state.live)
        if state.workers:
            state.worker_seen_at = time.monotonic()
        state.capacity_per_s = sum(w.images_per_s for w in state.live)

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


def _worker_info(beat: bytes | None) -> WorkerInfo | None:
    """A live worker from its heartbeat; None for one registered without stats yet."""
    if beat is None:
        return None
    try:
        stats = json.loads(beat)
        return WorkerInfo(
            worker_id=str(stats["worker"]),
            version=str(stats.get("version", "unknown")),
            engine=str(stats.get("engine", "unknown")),
            precision=str(stats.get("precision", "unknown")),
            images_per_s=float(stats["images_per_s"]),
            cpu=str(stats.get("cpu", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None

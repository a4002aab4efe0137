"""Distributed mode's broker, gateway side: jobs go onto a Redis stream per model, results
come back on this gateway's own reply list, drained by one background task.

Admission is decided before a request's images are decoded: a reservation script sets
aside queue places (members of a sorted set with an expiry, shared by every gateway) and
refuses when the stream's length plus the places set aside would pass `max_queue`; the
job is then added into its place (XADD + ZREM, one script). A job without a place is
admitted only if there is room beside the places set aside. So the queue is bounded
across any number of gateways and a refused request costs no decode. Retry-After and the
models' descriptions come from the queue monitor (api/broker/queue_monitor.py); whether
Redis answers, from the probe (api/broker/redis_probe.py), which fails requests in
flight at once when it does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resnet_serve.api.broker.admission_scripts import ADMIT_RESERVED, RESERVE
from resnet_serve.api.broker.queue_monitor import INTERVAL_S as MONITOR_INTERVAL_S
from resnet_serve.api.broker.queue_monitor import QueueMonitor
from resnet_serve.api.broker.redis_probe import RedisProbe, unless_lost
from resnet_serve.shared import keys as k
from resnet_serve.shared.admission import (
    admissible,
    budget_s,
    check_not_too_late,
    retry_after_s,
    whole_budget_s,
)
from resnet_serve.shared.broker import Reservation
from resnet_serve.shared.errors import (
    BrokerUnavailable,
    NotReady,
    NoWorkers,
    QueueFull,
    ServeError,
    UnknownModel,
)
from resnet_serve.shared.jobs import Job, ModelInfo, Result, WorkerInfo
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.redis_client import redacted, redis_client
from resnet_serve.shared.settings import Settings
from resnet_serve.shared.supervise import LoopHealth, cancel_all, reconnecting, supervised
from resnet_serve.shared.waiters import Waiters
from resnet_serve.shared.wire import MalformedMessage, decode_reply, encode_job

log = logging.getLogger(__name__)


REPLY_BLOCK_S = 1.0
WORKER_POLL_S = 0.1  # how often a request waiting for a first worker looks again
NO_WORKERS_RETRY_S = 5.0
# After the reservation script says "full" or "too late even for a whole deadline", the
# gateway refuses that model's uploads unread for this long, then asks Redis again: most
# refusals then cost no body read or round trip; a drained queue is seen within 50 ms.
FULL_KNOWN_S = 0.05
# The reply reader's socket waits this long past the block time. A read that times out
# after Redis popped replies would drop them, so it must only ever time out when Redis is
# frozen (and so popped nothing); noticing a lost Redis quickly is the probe's job.
REPLY_READ_MARGIN_S = 30.0


class RedisBroker:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = k.Keys(settings.redis_namespace)
        self.gateway_id = uuid.uuid4().hex[:16]
        self.reply_to = self.keys.reply(self.gateway_id)
        # Commands give up when Redis is lost, so no request waits on a frozen Redis for
        # longer than the probe takes to notice.
        self._client = redis_client(settings, timeout_s=settings.redis_loss_timeout_s)
        self._blocking = redis_client(
            settings, block_s=REPLY_BLOCK_S, timeout_s=REPLY_READ_MARGIN_S
        )
        self._admit = self._client.register_script(ADMIT_RESERVED)
        self._reserve = self._client.register_script(RESERVE)
        self._waiters = Waiters()
        self._full_until: dict[str, float] = {}  # model -> until when "full" is known
        self._background: set[asyncio.Task[object]] = set()  # cancellation notices
        self.monitor = QueueMonitor(settings, metrics, self._client)
        # Requests waiting when a model's last worker is gone hear so now, not at their
        # deadline (within a registration TTL plus one monitor round), or once the
        # scale-from-zero wait has passed without a new worker, when one is set.
        self._gone_since: dict[str, tuple[float, float]] = {}  # (since, last seen gone)
        self.monitor.on_no_workers = self._workers_gone
        self.probe = RedisProbe(settings, self._fail_in_flight)
        # The dispatcher beats after every read (at least every REPLY_BLOCK_S).
        self.replies = LoopHealth(stale_after_s=REPLY_BLOCK_S + 4)
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the reply drainer and the monitor; Redis being down is not fatal here,
        readiness reports it and both loops reconnect on their own."""
        log.info("gateway %s using Redis at %s", self.gateway_id, self._url())
        self._tasks = [
            asyncio.create_task(
                supervised("replies", self._drain_replies, self.replies), name="replies"
            ),
            asyncio.create_task(
                supervised("monitor", self.monitor.run, self.monitor.health), name="monitor"
            ),
            asyncio.create_task(supervised("redis-probe", self.probe.run), name="redis-probe"),
        ]

    def ready(self) -> bool:
        """Redis answers, the reply dispatcher and the queue monitor work. Workers are not
        needed: with none (scale to zero) jobs wait in the stream for one."""
        loops_alive = bool(self._tasks) and not any(task.done() for task in self._tasks)
        working = self.probe.reachable and self.replies.healthy and self.monitor.health.healthy
        return loops_alive and working and not self._closing

    def not_ready_error(self) -> ServeError:
        if self._closing:
            return NotReady("the gateway is draining", retry_after_s=1)
        if not self.probe.reachable:
            return BrokerUnavailable("the job queue (Redis) is unreachable", retry_after_s=1)
        if not self.replies.healthy:
            return NotReady("the reply dispatcher is not working", retry_after_s=1)
        return NotReady("the queue monitor is not working", retry_after_s=1)

    def models(self) -> Mapping[str, ModelInfo]:
        return self.monitor.models

    def workers(self, model: str) -> list[WorkerInfo]:
        return self.monitor.workers_of(model)

    async def _a_worker(self, model: str) -> None:
        """Return once a live worker serves `model` (or none was observed yet); else,
        after the scale-from-zero wait, NoWorkers."""
        deadline = time.monotonic() + self.settings.scale_from_zero_wait_s
        while self.monitor.has_workers(model) is False:
            self.monitor.want(model)  # workers_needed >= 1: an autoscaler starts one
            if time.monotonic() >= deadline:
                raise self._no_workers(model)
            await asyncio.sleep(WORKER_POLL_S)

    def _workers_gone(self, model: str) -> None:  # each monitor round that finds none
        now = time.monotonic()
        since, last = self._gone_since.get(model, (now, now))
        if now - last > 3 * MONITOR_INTERVAL_S:  # workers came back in between
            since = now
        self._gone_since[model] = (since, now)
        if now - since >= self.settings.scale_from_zero_wait_s:
            self._waiters.fail_all(lambda: self._no_workers(model), group=model)

    def _no_workers(self, model: str) -> NoWorkers:
        wait = self.settings.scale_from_zero_wait_s
        waited = f" after waiting {wait:g} s for one to start" if wait else ""
        return NoWorkers(
            f"no worker serves {model!r} now{waited}", retry_after_s=NO_WORKERS_RETRY_S
        )

    def saturated(self) -> bool:
        """Only the reservation script knows, across gateways; what this gateway knows
        is that it said "full" (or "too late for any request") for the default model
        under `FULL_KNOWN_S` ago."""
        return time.monotonic() < self._full_until.get(self.settings.model, 0.0)

    def retry_after_s(self, model: str | None = None) -> float:
        return self.monitor.retry_after_s(model or self.settings.model)

    def _full(self, model: str) -> QueueFull:
        self._full_until[model] = time.monotonic() + FULL_KNOWN_S
        return QueueFull("the inference queue is full", retry_after_s=self.retry_after_s(model))

    async def reserve(self, model: str, count: int, deadline: float | None = None) -> Reservation:
        if not self.ready():
            raise self.not_ready_error()
        if model not in self.monitor.models:
            raise UnknownModel(f"model {model!r} is not served here")
        await self._a_worker(model)
        prefix = f"{self.gateway_id}:{uuid.uuid4().hex[:12]}:"
        # A place lives as long as the request may (decode included), then lapses.
        ttl_ms = int(self.settings.request_timeout_s * 1000)
        # The jobs ahead are counted in the script, cluster-wide, in the same step that
        # reserves; the drain rate is the workers' own, from their heartbeats.
        rate, batch_s = self.monitor.drain(model)
        budget = budget_s(deadline, time.time(), self.settings.admit_within_s)
        fits = admissible(rate, batch_s, budget)
        check_not_too_late(count, fits, budget)
        # Failed by the probe, like a waiting request, when Redis is lost meanwhile: a
        # reservation sent into a frozen Redis would otherwise wait for socket timeouts.
        with self._waiters.waiting(f"reserve:{prefix}") as lost:
            granted = await unless_lost(
                self._reserve(
                    keys=[self.keys.jobs(model), self.keys.queue_places(model)],
                    args=[min(self.settings.max_queue, fits), count, ttl_ms, prefix],
                ),
                lost,
                "reserve queue places",
            )
        if int(granted) < 0:
            ahead = -int(granted) - 1
            if ahead + count > self.settings.max_queue:
                raise self._full(model)
            if ahead + 1 > admissible(rate, batch_s, whole_budget_s(self.settings)):
                self._full_until[model] = time.monotonic() + FULL_KNOWN_S
            raise QueueFull(
                f"the {ahead} images queued ahead would not be done in time for this request",
                retry_after_s=retry_after_s(ahead + count - fits, rate),
            )
        return Reservation(model, [f"{prefix}{i}" for i in range(1, count + 1)])

    async def release(self, reservation: Reservation) -> None:
        places, reservation.places = reservation.places, []
        if not places:
            return
        try:
            await self._client.zrem(self.keys.queue_places(reservation.model), *places)
        except RedisError as exc:  # they lapse on their own (request_timeout_s)
            log.warning("could not release queue places: %r", exc)

    async def submit(self, job: Job, place: str | None = None) -> Result:
        if not self.ready():
            raise self.not_ready_error()
        if job.model not in self.monitor.models:
            raise UnknownModel(f"model {job.model!r} is not served here")
        # Registered before the job is visible to any worker, so no reply can be missed.
        with self._waiters.waiting(job.job_id, group=job.model) as future:
            fields = encode_job(job, self.reply_to)
            keys = [self.keys.jobs(job.model), self.keys.queue_places(job.model)]
            header, tensor = fields[b"header"], fields[b"tensor"]
            args: list[bytes | str | int] = [self.settings.max_queue, header, tensor, place or ""]
            entry = await unless_lost(self._admit(keys=keys, args=args), future, "enqueue a job")
            if entry is None:
                raise self._full(job.model)
            try:
                return await self._waiters.outcome(future, job.deadline)
            except asyncio.CancelledError:  # the client left (api/pipeline/hangups.py)
                self._announce_cancelled(job)
                raise

    def _announce_cancelled(self, job: Job) -> None:
        """Tell the workers to skip the job (best effort, in the background)."""
        notice = self._client.publish(self.keys.cancels(job.model), job.job_id)
        task = asyncio.ensure_future(notice)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def close(self) -> None:
        """Drain: stop admitting, wait for in-flight requests (bounded), stop the loops."""
        self._closing = True
        await self._waiters.drain(self.settings.request_timeout_s)
        await cancel_all(self._tasks)
        await self.probe.close()
        await self._client.aclose()
        await self._blocking.aclose()

    # Reply path

    async def _drain_replies(self) -> None:
        def lost(exc: RedisError) -> None:
            if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                self.probe.lost(exc)

        await reconnecting("read replies", self._read_replies, health=self.replies, on_error=lost)

    async def _read_replies(self) -> None:
        # BLMPOP: up to 256 replies per round trip (redis-py 5 mistypes blmpop).
        popped = await self._blocking.execute_command(
            "BLMPOP", REPLY_BLOCK_S, 1, self.reply_to, "LEFT", "COUNT", 256
        )
        if popped:
            self._resolve(cast(list[bytes], popped[1]))

    def _fail_in_flight(self) -> None:
        """Redis is gone: every waiting request answers 503 now, not at its deadline."""
        self._waiters.fail_all(
            lambda: BrokerUnavailable("lost the job queue (Redis) while waiting", retry_after_s=1)
        )

    def _resolve(self, replies: list[bytes]) -> None:
        for data in replies:
            try:
                job_id, outcome = decode_reply(data)
            except MalformedMessage as exc:
                log.warning("dropped a reply: %s", exc)
                continue
            self._waiters.resolve(job_id, outcome)

    def _url(self) -> str:
        return redacted(self.settings.redis_url.get_secret_value())

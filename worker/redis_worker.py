"""Distributed mode's worker: jobs from a Redis stream through a consumer group, run by the
same BatchRunner as standalone mode, results published to each job's gateway.

Guarantees, and how:
- nothing lost: a job is acknowledged (and deleted) in the same transaction that
  publishes its result; jobs a dead worker held are reclaimed after the visibility timeout;
- no poison loops: a job whose inference keeps failing is dead-lettered after
  `max_deliveries` deliveries and its client gets an error;
- the engine never waits on Redis: a reader task keeps up to one batch prefetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from resnet_serve.shared import keys as k
from resnet_serve.shared.errors import DeadLettered, InferenceFailed, ServeError
from resnet_serve.shared.jobs import Job, Result
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.redis_client import redacted, redis_client
from resnet_serve.shared.settings import Settings
from resnet_serve.shared.supervise import Backoff
from resnet_serve.shared.wire import (
    HEADER,
    MalformedMessage,
    decode_job,
    encode_model_info,
    encode_reply,
)
from resnet_serve.worker.model.loading import LoadedModel, load_model
from resnet_serve.worker.runner import BatchRunner

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500  # how long a read waits for work; also bounds how fast SIGTERM is seen
RECLAIM_SCAN = 64  # pending entries inspected per reclaim pass

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry as redis-py returns it


@dataclass(frozen=True, slots=True)
class Held:
    """A job this worker has taken and not yet acknowledged."""

    entry_id: bytes
    reply_to: str
    deliveries: int


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisWorker:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        model: LoadedModel,
        client: Redis,
        blocking: Redis,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model = model
        self.name = model.manifest.name
        self.keys = k.Keys(settings.redis_namespace)
        self.stream = self.keys.jobs(self.name)
        self.worker_id = settings.worker_id or default_worker_id()
        self._client = client
        self._blocking = blocking
        # Prefetch: at most one batch waits here while the engine runs the current one.
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=settings.max_batch)
        self._held: dict[str, Held] = {}
        self._stopping = asyncio.Event()
        self.runner = BatchRunner(
            model,
            self._queue,
            self._deliver,
            max_batch=settings.max_batch,
            max_batch_wait_ms=settings.max_batch_wait_ms,
            metrics=metrics,
        )
        self.batches = 0

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Graceful stop (SIGTERM): stop reading, finish and acknowledge what was taken."""
        log.info("stopping: finishing %d taken jobs", len(self._held))
        self._stopping.set()

    async def run(self) -> None:
        """Serve until `stop()`; raises if a part of the worker dies, so the process exits
        non-zero and its supervisor restarts it."""
        self.metrics.max_batch.labels(self.name).set(self.settings.max_batch)
        runner = asyncio.create_task(self.runner.run(), name="batch-runner")
        reader = asyncio.create_task(self._read_loop(), name="reader")
        helpers = [
            asyncio.create_task(self._reclaim_loop(), name="reclaimer"),
            asyncio.create_task(self._heartbeat_loop(runner), name="heartbeat"),
        ]
        stopping = asyncio.create_task(self._stopping.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                [stopping, runner, reader, *helpers], return_when=asyncio.FIRST_COMPLETED
            )
            if stopping not in done:
                failed = done.pop()
                raise RuntimeError(f"worker task {failed.get_name()} stopped: {failed!r}")
            await reader  # returns within one read block after stop()
            await self._finish_taken(runner)
        finally:
            for task in [stopping, runner, reader, *helpers]:
                task.cancel()
            for task in [runner, reader, *helpers]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(RedisError):
                await self._client.delete(self.keys.worker(self.name, self.worker_id))

    async def _finish_taken(self, runner: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + self.settings.request_timeout_s
        while (self._held or self.runner.busy) and time.monotonic() < deadline:
            if runner.done():
                break
            await asyncio.sleep(0.01)
        if self._held:
            log.warning("%d jobs left unacknowledged; they will be reclaimed", len(self._held))

    # Taking jobs

    async def ensure_group(self) -> None:
        """Create the consumer group (and stream) if missing. From id 0, so jobs pushed
        before any worker existed, or after Redis lost its data, are still served."""
        try:
            await self._client.xgroup_create(self.stream, k.WORKER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read_loop(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            room = self._queue.maxsize - self._queue.qsize()
            try:
                if backoff.failing:
                    await self.ensure_group()
                response = await self._blocking.xreadgroup(
                    k.WORKER_GROUP,
                    self.worker_id,
                    {self.stream: ">"},
                    count=max(room, 1),
                    block=READ_BLOCK_MS,
                )
            except RedisError as exc:
                if not backoff.failing:
                    log.warning("cannot read jobs: %r; retrying", exc)
                await backoff.wait()
                continue
            if backoff.failing:
                log.info("reading jobs again")
            backoff.reset()
            streams = cast(list[tuple[bytes, list[Entry]]], response or [])
            for _stream, entries in streams:
                for entry_id, fields in entries:
                    await self._accept(entry_id, fields, deliveries=1)

    async def _accept(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        try:
            envelope = decode_job(fields)
            if envelope.job.model != self.name:
                raise MalformedMessage(f"job for {envelope.job.model!r} on {self.name}'s stream")
        except MalformedMessage as exc:
            await self._dead_letter(entry_id, fields, str(exc))
            return
        job = envelope.job
        self._held[job.job_id] = Held(entry_id, envelope.reply_to, deliveries)
        await self._queue.put(job)

    async def _reclaim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.visibility_timeout_s / 2)
            try:
                await self._reclaim()
            except RedisError as exc:
                log.debug("reclaim pass skipped: %r", exc)

    async def _reclaim(self) -> None:
        """Take over jobs another worker (or this one, on a failed attempt) held too long."""
        idle_ms = int(self.settings.visibility_timeout_s * 1000)
        pending = await self._client.xpending_range(
            self.stream, k.WORKER_GROUP, min="-", max="+", count=RECLAIM_SCAN, idle=idle_ms
        )
        mine = {held.entry_id for held in self._held.values()}
        for item in pending:
            entry_id = cast(bytes, item["message_id"])
            if entry_id in mine or self._queue.full() or self._stopping.is_set():
                continue
            # XCLAIM is atomic: if two workers race for an entry, one gets it.
            claimed = await self._client.xclaim(
                self.stream, k.WORKER_GROUP, self.worker_id, idle_ms, [entry_id]
            )
            if not claimed:
                continue
            _, fields = cast(list[Entry], claimed)[0]
            if not fields:  # deleted meanwhile: only its pending record was left
                await self._client.xack(self.stream, k.WORKER_GROUP, entry_id)
                continue
            deliveries = int(item["times_delivered"]) + 1
            if deliveries > self.settings.max_deliveries:
                reason = f"inference failed {deliveries - 1} times"
                await self._dead_letter(entry_id, fields, reason)
                continue
            self.metrics.reclaimed_jobs.labels(self.name).inc()
            log.info("reclaimed job entry %s (delivery %d)", entry_id.decode(), deliveries)
            await self._accept(entry_id, fields, deliveries)

    # Answering

    async def _deliver(self, outcomes: list[tuple[Job, Result | ServeError]]) -> None:
        """Publish results and acknowledge their jobs in one transaction. A failed attempt
        below `max_deliveries` stays pending, to be retried after the visibility timeout."""
        self.batches += 1
        pipe = self._client.pipeline(transaction=True)
        for job, outcome in outcomes:
            held = self._held.pop(job.job_id)
            if isinstance(outcome, InferenceFailed):
                if held.deliveries < self.settings.max_deliveries:
                    continue
                reason = f"{outcome.message} on each of {held.deliveries} deliveries"
                self._add_dead_letter(pipe, held.entry_id, job, reason)
                outcome = DeadLettered(f"the job was dead-lettered: {reason}")
            pipe.rpush(held.reply_to, encode_reply(job.job_id, outcome))
            pipe.expire(held.reply_to, k.REPLY_TTL_S)
            pipe.xack(self.stream, k.WORKER_GROUP, held.entry_id)
            pipe.xdel(self.stream, held.entry_id)
        try:
            await pipe.execute()
        except RedisError as exc:
            # Unacknowledged, so another delivery will answer them once Redis is back.
            log.error("could not publish %d results: %r", len(outcomes), exc)

    def _add_dead_letter(self, pipe: Pipeline, entry_id: bytes, job: Job, reason: str) -> None:
        header = json.dumps({"job_id": job.job_id, "request_id": job.request_id})
        self._dead_letter_commands(pipe, entry_id, header.encode(), reason)

    async def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        """Move an entry to the dead-letter stream and answer its client if it can be read."""
        log.warning("dead-lettering job entry %s: %s", entry_id.decode(), reason)
        pipe = self._client.pipeline(transaction=True)
        self._dead_letter_commands(pipe, entry_id, fields.get(HEADER, b""), reason)
        with contextlib.suppress(MalformedMessage):
            envelope = decode_job(fields)
            error = DeadLettered(f"the job was dead-lettered: {reason}")
            pipe.rpush(envelope.reply_to, encode_reply(envelope.job.job_id, error))
            pipe.expire(envelope.reply_to, k.REPLY_TTL_S)
        pipe.xack(self.stream, k.WORKER_GROUP, entry_id)
        pipe.xdel(self.stream, entry_id)
        await pipe.execute()

    def _dead_letter_commands(
        self, pipe: Pipeline, entry_id: bytes, header: bytes, reason: str
    ) -> None:
        self.metrics.dead_lettered.labels(self.name).inc()
        pipe.xadd(
            self.keys.dead_letters(self.name),
            {"header": header, "reason": reason, "entry": entry_id, "worker": self.worker_id},
            maxlen=k.DEAD_LETTER_MAXLEN,
            approximate=True,
        )

    # Liveness

    async def _heartbeat_loop(self, runner: asyncio.Task[None]) -> None:
        interval = self.settings.heartbeat_interval_s
        beat_file = self.settings.heartbeat_file
        beat_file.parent.mkdir(parents=True, exist_ok=True)
        while not runner.done():
            beat = {
                "worker": self.worker_id,
                "images_per_s": self.runner.images_per_s,
                "batches": self.batches,
                "max_batch": self.settings.max_batch,
            }
            try:
                pipe = self._client.pipeline(transaction=False)
                pipe.set(
                    self.keys.worker(self.name, self.worker_id),
                    json.dumps(beat),
                    px=int(interval * 3000),
                )
                pipe.set(
                    self.keys.model_info(self.name),
                    encode_model_info(self.model.info),
                    ex=k.MODEL_INFO_TTL_S,
                )
                await pipe.execute()
            except RedisError as exc:
                log.debug("heartbeat not written to Redis: %r", exc)
            # Local liveness says the loop runs, whether or not Redis is up: a Redis
            # outage must not make Kubernetes restart every worker.
            beat_file.touch()
            await asyncio.sleep(interval)


def heartbeat_fresh(settings: Settings) -> bool:
    """For `worker --check`: has this worker's loop written its heartbeat lately?"""
    try:
        age = time.time() - settings.heartbeat_file.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < max(3 * settings.heartbeat_interval_s, 5.0)


async def serve_worker(settings: Settings) -> None:
    """`resnet-serve worker`: load and warm the model, then take jobs until SIGTERM."""
    from prometheus_client import start_http_server

    metrics = Metrics()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, settings.host, metrics.registry)
    model = await asyncio.to_thread(load_model, settings)
    client = redis_client(settings)
    blocking = redis_client(settings, block_s=READ_BLOCK_MS / 1000)
    worker = RedisWorker(settings, metrics, model, client, blocking)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    url = redacted(settings.redis_url.get_secret_value())
    log.info("worker %s serving %s from %s", worker.worker_id, model.info.name, url)
    try:
        await _connect(worker, url)
        await worker.run()
    finally:
        model.engine.close()
        await client.aclose()
        await blocking.aclose()
    log.info("worker %s stopped", worker.worker_id)


async def _connect(worker: RedisWorker, url: str) -> None:
    backoff = Backoff(max_s=5.0)
    while not worker.stopping:
        try:
            await worker.ensure_group()
            return
        except RedisError as exc:
            if not backoff.failing:
                log.warning("waiting for Redis at %s: %r", url, exc)
            await backoff.wait()

"""Distributed mode's worker: jobs from a Redis stream through a consumer group, run by the
same BatchRunner as standalone mode, results published to each job's gateway.

The contract for held work (docs/architecture.md, "Held work"), and how:
- every job held, prefetched or running, is leased: its owner renews it every third of
  `visibility_timeout_s`, owner-checked (worker/leases.py), so only a dead or stopped
  worker's jobs are reclaimed, and a job is answered once, by its current owner, in the
  same script that acknowledges and deletes it;
- reclaiming comes first: whenever the prefetch queue has room, lapsed jobs are claimed
  before new ones are read, so a dead worker's jobs are picked up however busy the
  survivors are;
- a worker that stops for any reason (SIGTERM, a broken engine, a hung inference) hands
  what it still holds back for immediate reclaim; a broken engine or a hung inference
  also makes it exit non-zero;
- no poison loops: a job whose inference keeps failing is dead-lettered after
  `max_deliveries` deliveries and its client gets an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from resnet_serve.shared import keys as k
from resnet_serve.shared.jobs import Job
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings
from resnet_serve.shared.supervise import cancel_all, reconnecting
from resnet_serve.shared.wire import MalformedMessage, decode_job
from resnet_serve.worker.answering import Answering, Held
from resnet_serve.worker.batching import WatchedQueue
from resnet_serve.worker.cancels import CancelledJobs, listen
from resnet_serve.worker.failures import failure_of
from resnet_serve.worker.keepalive import heartbeat, renew_leases
from resnet_serve.worker.leases import Leases
from resnet_serve.worker.liveness import Liveness
from resnet_serve.worker.model.loading import LoadedModel
from resnet_serve.worker.registry import Registration
from resnet_serve.worker.runner import BatchRunner
from resnet_serve.worker.watchdog import hung_inference

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500  # how long a read waits for work; also bounds how fast SIGTERM is seen
HAND_BACK_TIMEOUT_S = 5.0  # a stopping worker's last attempt to return its jobs

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry as redis-py returns it


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
        self.leases = Leases(
            client,
            self.stream,
            self.keys.dead_letters(self.name),
            k.WORKER_GROUP,
            self.worker_id,
            reply_ttl_s=k.REPLY_TTL_S,
            dead_letter_maxlen=k.DEAD_LETTER_MAXLEN,
        )
        self.registration = Registration(client, self.keys, self.name, self.worker_id)
        self.liveness = Liveness(settings, self.worker_id)
        # Prefetch: at most one batch waits while the engine runs the current one. A place
        # is taken per job read or claimed, and freed when the runner takes the job.
        self._queue: WatchedQueue[Job] = WatchedQueue()
        self._prefetch = asyncio.Semaphore(settings.max_batch)
        self.held: dict[str, Held] = {}
        self.answering = Answering(
            self.leases,
            metrics,
            self.name,
            self.held,
            max_deliveries=settings.max_deliveries,
            idle_ms=self.idle_ms,
            placeholder_key=self.stream,
        )
        self._stopping = asyncio.Event()
        self._group_lost = False
        self._next_reclaim = 0.0  # when to look for lapsed leases next
        self.cancelled = CancelledJobs(settings.request_timeout_s)
        self.runner = BatchRunner(
            model,
            self._queue,
            self.answering.deliver,
            max_batch=settings.max_batch,
            max_batch_wait_ms=settings.max_batch_wait_ms,
            metrics=metrics,
            on_take=self._taken,
            cancelled=self.cancelled,
            streams=settings.inference_streams,
        )

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def idle_ms(self) -> int:
        """How long a lease lasts without renewal: then the job is anyone's."""
        return int(self.settings.visibility_timeout_s * 1000)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): stop reading, finish and answer what was taken."""
        log.info("stopping: finishing %d taken jobs", len(self.held))
        self._stopping.set()

    async def run(self) -> None:
        """Serve until `stop()`. Raises `WorkerFailed`, after handing its jobs back, if the
        engine breaks, an inference hangs or a part of the worker dies."""
        self.metrics.max_batch.labels(self.name).set(self.settings.max_batch)
        runner = asyncio.create_task(self.runner.run(), name="batch-runner")
        reader = asyncio.create_task(self._read_loop(), name="reader")
        watchdog = asyncio.create_task(hung_inference(self.runner, self.settings), name="watchdog")
        helpers = [
            asyncio.create_task(renew_leases(self), name="lease-renewer"),
            asyncio.create_task(heartbeat(self), name="heartbeat"),
            asyncio.create_task(
                listen(self._client, self.keys.cancels(self.name), self.cancelled),
                name="cancels",
            ),
        ]
        stopping = asyncio.create_task(self._stopping.wait(), name="stop")
        tasks = [stopping, runner, reader, watchdog, *helpers]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                await reader  # returns within one read block after stop()
                await self._finish_taken(runner)
                await self._hand_back_all("stopping")
                return
            reader.cancel()
            failure = failure_of(done.pop())
            log.critical("%s; handing %d held jobs back", failure, len(self.held))
            await self._hand_back_all("failing")
            raise failure
        finally:
            await cancel_all(tasks)
            with contextlib.suppress(RedisError):
                await self.registration.unregister()
            self.liveness.remove()

    async def _finish_taken(self, runner: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + self.settings.request_timeout_s
        while (self.held or self.runner.busy) and time.monotonic() < deadline:
            if runner.done():
                break
            await asyncio.sleep(0.01)

    async def _hand_back_all(self, why: str) -> None:
        """The contract: a stopping worker returns what it holds for immediate reclaim."""
        entries = [held.entry_id for held in self.held.values()]
        if not entries:
            return
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_S):
                handed = await self.leases.hand_back(entries, self.idle_ms)
        except (RedisError, TimeoutError) as exc:
            log.warning("could not hand %d jobs back (%r): reclaimed after their lease lapses",
                        len(entries), exc)  # fmt: skip
            return
        self.held.clear()
        self.metrics.handed_back_jobs.labels(self.name).inc(len(handed))
        log.warning("%s: handed %d jobs back for reclaim", why, len(handed))

    # Taking jobs

    async def ensure_group(self) -> None:
        """Create the consumer group (and stream) if missing. From id 0, so jobs pushed
        before any worker existed, or after Redis lost its data, are still served."""
        try:
            await self._client.xgroup_create(self.stream, k.WORKER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _room(self) -> int:
        """Wait for at least one free prefetch place; take all free ones."""
        await self._prefetch.acquire()
        room = 1
        while not self._prefetch.locked():
            await self._prefetch.acquire()
            room += 1
        return room

    def _taken(self, job: Job) -> bool:
        """The runner took `job` into a batch: free its prefetch place; run it if still ours."""
        self._prefetch.release()
        return job.job_id in self.held

    async def _read_loop(self) -> None:
        def lost(exc: RedisError) -> None:
            self._group_lost = True  # Redis may have lost its data: recreate the group

        await reconnecting(
            "read jobs", self._read_round, on_error=lost, until=self._stopping.is_set
        )

    async def _read_round(self) -> None:
        """Fill the free prefetch places: lapsed leases first (claimed as soon as there
        is room, however busy), then new jobs. Unused places are given back."""
        room = await self._room()
        used = 0
        try:
            if self._stopping.is_set():
                return
            if self._group_lost:
                await self.ensure_group()
                self._group_lost = False
            if time.monotonic() >= self._next_reclaim:
                used = await self._reclaim(room)
                if used < room:
                    self._next_reclaim = time.monotonic() + self.settings.visibility_timeout_s / 4
            if used < room:
                used += await self._read_new(room - used)
        finally:
            self._release(room - used)

    def _release(self, places: int) -> None:
        for _ in range(places):
            self._prefetch.release()

    async def _read_new(self, count: int) -> int:
        response = await self._blocking.xreadgroup(
            k.WORKER_GROUP,
            self.worker_id,
            {self.stream: ">"},
            count=count,
            block=READ_BLOCK_MS,
        )
        taken = 0
        for _stream, entries in cast(list[tuple[bytes, list[Entry]]], response or []):
            for entry_id, fields in entries:
                taken += await self._accept(entry_id, fields, deliveries=1)
        return taken

    async def _reclaim(self, room: int) -> int:
        """Claim jobs whose lease lapsed (owner dead, stopped, or handed them back)."""
        if self._stopping.is_set():
            return 0
        taken = 0
        for claimed in await self.leases.reclaim(self.idle_ms, room):
            entry_id, fields = claimed.entry_id, claimed.fields
            if claimed.deliveries > self.settings.max_deliveries:
                reason = f"inference failed {claimed.deliveries - 1} times"
                await self.answering.dead_letter(entry_id, fields, reason)
                continue
            self.metrics.reclaimed_jobs.labels(self.name).inc()
            log.info("reclaimed job entry %s (delivery %d)", entry_id.decode(), claimed.deliveries)
            taken += await self._accept(entry_id, fields, claimed.deliveries)
        return taken

    async def _accept(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> int:
        """Hold and queue one entry; 1 if it took a prefetch place."""
        try:
            envelope = decode_job(fields)
            if envelope.job.model != self.name:
                raise MalformedMessage(f"job for {envelope.job.model!r} on {self.name}'s stream")
        except MalformedMessage as exc:
            await self.answering.dead_letter(entry_id, fields, str(exc))
            return 0
        job = envelope.job
        if envelope.budget_s is not None:
            # Judged on Redis's clock: the entry id is when Redis added the job.
            added_s = int(entry_id.split(b"-")[0]) / 1000 - self.registration.clock_offset_s
            job.enqueued_at = added_s
            job.deadline = added_s + envelope.budget_s
        self.held[job.job_id] = Held(entry_id, envelope.reply_to, deliveries)
        self._queue.put_nowait(job)
        return 1

"""Bulk jobs in Redis: the uploaded images until a jobs-worker has run them, each job's
state and per-image results until they expire. Gateways write jobs; jobs-workers run
them; both use this module. Key names are in shared/keys.py.

Admission (the gateway's writes) is in api/bulk/admission.py. A job's keys over its life,
every one with a TTL:
- admitted: state and idempotency key, TTL `BULK_UPLOAD_WINDOW_S` while images are written;
- queued: images, TTL `bulk_upload_ttl_s`; state, results and idempotency key, TTL
  `bulk_upload_ttl_s + bulk_result_ttl_s`; running extends these to
  `bulk_job_timeout_s + bulk_result_ttl_s`;
- done or failed: images deleted; the rest kept `bulk_result_ttl_s`.
Uploads waiting in Redis add up to at most `max_bulk_stored_bytes`: admission counts them
in a ledger (bytes per job, and when each upload expires), atomically with the check.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from resnet_serve.api.bulk.queue import arq_redis
from resnet_serve.shared import keys as k
from resnet_serve.shared.errors import BrokerUnavailable, ServeError, UploadExpired
from resnet_serve.shared.settings import Settings

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

# A job's upload left Redis: give its bytes back to the ledger. KEYS: expiry, bytes.
RELEASE = """
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or 0)
if n ~= 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], -n) end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return n
"""


@dataclass
class JobState:
    """A bulk job as stored; `results` maps image index to its stored outcome."""

    job_id: str
    status: str
    model: str
    top_k: int
    filenames: list[str]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, str] | None = None
    idempotency: str | None = None  # the Redis key of its Idempotency-Key, if it has one
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    expires_in_s: float | None = None


def _text(raw: dict[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return value.decode() if value is not None else None


def _seconds(raw: dict[bytes, bytes], name: str) -> float | None:
    value = _text(raw, name)
    return float(value) if value else None


class BulkStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = k.Keys(settings.redis_namespace)
        self.redis = arq_redis(settings)
        self._release = self.redis.register_script(RELEASE)

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)

    @property
    def queued_ttl_s(self) -> int:
        """State, results and idempotency key of a job that waits for a jobs-worker."""
        return math.ceil(self.settings.bulk_upload_ttl_s + self.settings.bulk_result_ttl_s)

    @property
    def _running_ttl_s(self) -> int:
        return math.ceil(self.settings.bulk_job_timeout_s + self.settings.bulk_result_ttl_s)

    def ledger(self) -> list[str]:
        """The upload ledger's keys: expiry times, and bytes per job with their total."""
        return [self.keys.bulk_ledger_expiry(), self.keys.bulk_ledger_bytes()]

    async def release(self, job_id: str) -> None:
        """Give a job's upload bytes back to the ledger (its images left Redis)."""
        await self._release(keys=self.ledger(), args=[job_id, k.BULK_LEDGER_TOTAL])

    # Gateway side

    async def read(self, job_id: str) -> JobState | None:
        """The job as a client sees it, or None once it expired (or never existed)."""
        async with unavailable_on_redis_errors(), self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.bulk_job(job_id))
            pipe.hgetall(self.keys.bulk_results(job_id))
            pipe.exists(self.keys.bulk_images(job_id))
            pipe.pttl(self.keys.bulk_job(job_id))
            raw, results, images_left, pttl = await pipe.execute()
        if not raw:
            return None
        state = self._decode(job_id, raw, results)
        state.expires_in_s = pttl / 1000 if pttl > 0 else None
        uploaded = _text(raw, "uploaded") == "1"
        if state.status == QUEUED and uploaded and not images_left and not state.results:
            # Nothing ran it before its images expired.
            expired = UploadExpired("the images expired in Redis before a jobs-worker ran them")
            state.status, state.error = FAILED, error_fields(expired)
        return state

    @staticmethod
    def _decode(job_id: str, raw: dict[bytes, bytes], results: dict[bytes, bytes]) -> JobState:
        error = _text(raw, "error")
        return JobState(
            job_id=job_id,
            status=_text(raw, "status") or QUEUED,
            model=_text(raw, "model") or "",
            top_k=int(_text(raw, "top_k") or 0),
            filenames=json.loads(_text(raw, "filenames") or "[]"),
            created_at=_seconds(raw, "created_at") or 0.0,
            started_at=_seconds(raw, "started_at"),
            finished_at=_seconds(raw, "finished_at"),
            error=json.loads(error) if error else None,
            idempotency=_text(raw, "idempotency") or None,
            results={int(index): json.loads(value) for index, value in results.items()},
        )

    # Jobs-worker side

    async def load(self, job_id: str) -> JobState | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.bulk_job(job_id))
            pipe.hgetall(self.keys.bulk_results(job_id))
            raw, results = await pipe.execute()
        return self._decode(job_id, raw, results) if raw else None

    async def mark_running(self, state: JobState) -> None:
        """Running (again, after a restart): its keys get the time the job may take."""
        key = self.keys.bulk_job(state.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "status", RUNNING)
            pipe.hsetnx(key, "started_at", repr(time.time()))
            for name in (key, self.keys.bulk_results(state.job_id), state.idempotency):
                if name:
                    pipe.expire(name, self._running_ttl_s)
            await pipe.execute()
        state.status = RUNNING

    async def has_images(self, job_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.bulk_images(job_id)))

    async def image(self, job_id: str, index: int) -> bytes | None:
        data = self.redis.hget(self.keys.bulk_images(job_id), str(index))
        return await cast(Awaitable[bytes | None], data)

    async def record(self, job_id: str, index: int, outcome: dict[str, Any]) -> None:
        """One image's result or error; its uploaded bytes are dropped at once."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.bulk_results(job_id), str(index), json.dumps(outcome))
            pipe.expire(self.keys.bulk_results(job_id), self._running_ttl_s)
            pipe.hdel(self.keys.bulk_images(job_id), str(index))
            await pipe.execute()

    async def finish(self, state: JobState, error: ServeError | None) -> None:
        """Done (or failed as a whole): keep state and results `bulk_result_ttl_s`, drop
        what is left of the upload and give its bytes back to the ledger."""
        ttl = math.ceil(self.settings.bulk_result_ttl_s)
        job_id = state.job_id
        key = self.keys.bulk_job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "status", FAILED if error else DONE)
            pipe.hset(key, "finished_at", repr(time.time()))
            if error is not None:
                pipe.hset(key, "error", json.dumps(error_fields(error)))
            for name in (key, self.keys.bulk_results(job_id), state.idempotency):
                if name:
                    pipe.expire(name, ttl)
            pipe.delete(self.keys.bulk_images(job_id))
            await pipe.execute()
        await self.release(job_id)


def error_fields(error: ServeError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


@contextlib.asynccontextmanager
async def unavailable_on_redis_errors() -> AsyncIterator[None]:
    try:
        yield
    except RedisError as exc:
        raise BrokerUnavailable(
            f"the job store (Redis) is unreachable: {type(exc).__name__}", retry_after_s=1
        ) from None

"""Bulk jobs in Redis: the uploaded images until a jobs-worker has run them, each job's
state and per-image results until they expire. Gateways write jobs; jobs-workers run
them; both use this module. Key names are in shared/keys.py.

A job's keys over its life (every one has a TTL):
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
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from api.bulk_queue import FUNCTION, arq_redis
from api.uploads import Upload
from shared import keys as k
from shared.errors import (
    BrokerUnavailable,
    BulkStorageFull,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    ServeError,
    UploadExpired,
)
from shared.settings import Settings

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
IMAGES_PER_WRITE = 32  # images per HSET while storing an upload: bounded command sizes

# Idempotency check, ledger check and reservation, and the job's state, in one step.
# KEYS: state, ledger expiry, ledger bytes[, idempotency]
# ARGV: job id, payload digest, upload TTL s, window s, bytes, byte limit, total field,
#       then the state's field/value pairs
ADMIT = """
local state, expiry, sizes, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, digest = ARGV[1], ARGV[2]
local upload_ttl, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local nbytes, limit, total_field = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
if idem then
  local held = redis.call('GET', idem)
  if held then return {'existing', held} end
end
local now = tonumber(redis.call('TIME')[1])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('HINCRBY', sizes, total_field, -tonumber(redis.call('HGET', sizes, gone) or 0))
  redis.call('HDEL', sizes, gone)
  redis.call('ZREM', expiry, gone)
end
local stored = tonumber(redis.call('HGET', sizes, total_field) or 0)
if stored + nbytes > limit then return {'full', tostring(stored)} end
redis.call('ZADD', expiry, now + upload_ttl, job_id)
redis.call('HSET', sizes, job_id, nbytes)
redis.call('HINCRBY', sizes, total_field, nbytes)
redis.call('EXPIRE', expiry, upload_ttl + window)
redis.call('EXPIRE', sizes, upload_ttl + window)
redis.call('HSET', state, unpack(ARGV, 8))
redis.call('EXPIRE', state, window)
if idem then redis.call('SET', idem, job_id .. ' ' .. digest, 'EX', window) end
return {'created', job_id}
"""

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


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str
    replayed: bool  # an earlier request with the same Idempotency-Key made this job


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
        self._admit = self.redis.register_script(ADMIT)
        self._release = self.redis.register_script(RELEASE)

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)

    @property
    def _running_ttl_s(self) -> int:
        return math.ceil(self.settings.bulk_job_timeout_s + self.settings.bulk_result_ttl_s)

    # Gateway side

    async def submit(
        self,
        uploads: list[Upload],
        *,
        model: str,
        top_k: int,
        digest: str,
        idempotency_key: str | None,
    ) -> Submitted:
        """Store the images and queue the job, or find the job this key already made."""
        job_id = uuid.uuid4().hex
        idem = self.keys.bulk_idempotency(idempotency_key) if idempotency_key else None
        async with _unavailable_on_redis_errors():
            outcome, value = await self._admit(
                keys=self._admit_keys(job_id, idem),
                args=self._admit_args(job_id, uploads, model, top_k, digest, idem),
            )
            if outcome == b"existing":
                return await self._replay(cast(bytes, value).decode(), digest)
            if outcome == b"full":
                raise BulkStorageFull(
                    "bulk uploads waiting in Redis have reached max_bulk_stored_bytes "
                    f"({self.settings.max_bulk_stored_bytes}); try again later",
                    retry_after_s=30,
                )
            try:
                await self._store_images(job_id, uploads)
                await self._mark_uploaded(job_id, idem)
                await self._enqueue(job_id)
            except BaseException:
                with contextlib.suppress(RedisError):
                    await self._forget(job_id, idem)
                raise
        return Submitted(job_id, replayed=False)

    def _admit_keys(self, job_id: str, idem: str | None) -> list[str]:
        keys = [self.keys.bulk_job(job_id), *self._ledger()]
        return [*keys, idem] if idem else keys

    def _admit_args(
        self,
        job_id: str,
        uploads: list[Upload],
        model: str,
        top_k: int,
        digest: str,
        idem: str | None,
    ) -> list[str | int]:
        state = {
            "status": QUEUED,
            "uploaded": "0",
            "model": model,
            "top_k": str(top_k),
            "filenames": json.dumps([upload.filename for upload in uploads]),
            "created_at": repr(time.time()),
            "idempotency": idem or "",
        }
        return [
            job_id,
            digest,
            math.ceil(self.settings.bulk_upload_ttl_s),
            k.BULK_UPLOAD_WINDOW_S,
            sum(len(upload.data) for upload in uploads),
            self.settings.max_bulk_stored_bytes,
            k.BULK_LEDGER_TOTAL,
            *(item for pair in state.items() for item in pair),
        ]

    async def _store_images(self, job_id: str, uploads: list[Upload]) -> None:
        key = self.keys.bulk_images(job_id)
        ttl = math.ceil(self.settings.bulk_upload_ttl_s)
        for start in range(0, len(uploads), IMAGES_PER_WRITE):
            chunk = uploads[start : start + IMAGES_PER_WRITE]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping={str(start + i): u.data for i, u in enumerate(chunk)})
                pipe.expire(key, ttl)
                await pipe.execute()

    async def _mark_uploaded(self, job_id: str, idem: str | None) -> None:
        ttl = math.ceil(self.settings.bulk_upload_ttl_s + self.settings.bulk_result_ttl_s)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.bulk_job(job_id), "uploaded", "1")
            pipe.expire(self.keys.bulk_job(job_id), ttl)
            if idem:
                pipe.expire(idem, ttl)
            await pipe.execute()

    async def _enqueue(self, job_id: str) -> None:
        """Queue the job for a jobs-worker; arq ignores a job id it already holds, so a
        replay may call this again safely."""
        settings = self.settings
        await self.redis.enqueue_job(
            FUNCTION, job_id, _job_id=job_id, _expires=settings.bulk_upload_ttl_s
        )
        queue_ttl = settings.bulk_upload_ttl_s + settings.bulk_job_timeout_s + 60
        await self.redis.expire(self.keys.bulk_queue(), math.ceil(queue_ttl))

    async def _replay(self, held: str, digest: str) -> Submitted:
        job_id, held_digest = held.split(" ", 1)
        if held_digest != digest:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different upload (files, model or "
                "top_k); use a new key for a new job"
            )
        fields = self.redis.hmget(self.keys.bulk_job(job_id), ["uploaded", "status"])
        state = await cast(Awaitable[list[bytes | None]], fields)
        if state[0] != b"1":
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is still storing its upload",
                retry_after_s=1,
            )
        if state[1] == QUEUED.encode():
            await self._enqueue(job_id)  # heals a first request cut off before it queued
        return Submitted(job_id, replayed=True)

    async def _forget(self, job_id: str, idem: str | None) -> None:
        await self.redis.delete(
            self.keys.bulk_job(job_id),
            self.keys.bulk_images(job_id),
            *([idem] if idem else []),
        )
        await self._release(keys=self._ledger(), args=[job_id, k.BULK_LEDGER_TOTAL])

    def _ledger(self) -> list[str]:
        return [self.keys.bulk_ledger_expiry(), self.keys.bulk_ledger_bytes()]

    async def read(self, job_id: str) -> JobState | None:
        """The job as a client sees it, or None once it expired (or never existed)."""
        async with _unavailable_on_redis_errors(), self.redis.pipeline(transaction=True) as pipe:
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
            state.status, state.error = FAILED, _error(expired)
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
                pipe.hset(key, "error", json.dumps(_error(error)))
            for name in (key, self.keys.bulk_results(job_id), state.idempotency):
                if name:
                    pipe.expire(name, ttl)
            pipe.delete(self.keys.bulk_images(job_id))
            await pipe.execute()
        await self._release(keys=self._ledger(), args=[job_id, k.BULK_LEDGER_TOTAL])


def _error(error: ServeError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


@contextlib.asynccontextmanager
async def _unavailable_on_redis_errors() -> AsyncIterator[None]:
    try:
        yield
    except RedisError as exc:
        raise BrokerUnavailable(
            f"the job store (Redis) is unreachable: {type(exc).__name__}", retry_after_s=1
        ) from None

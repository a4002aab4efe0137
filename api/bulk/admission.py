"""Admitting a bulk job: the gateway stores its images in Redis and queues it for arq.

One Lua script decides, atomically across gateways: an Idempotency-Key already held
answers with its job (or a conflict); otherwise the upload must fit in
`max_bulk_stored_bytes` with every other upload waiting in Redis (a ledger of bytes per
job, cleaned of expired uploads as it goes); then the job's state and the key are
written with a short TTL. The images follow in bounded writes, and the job is marked
uploaded and queued; if that fails, what was written is removed.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from redis.exceptions import RedisError

from resnet_serve.api.bulk.queue import FUNCTION
from resnet_serve.api.bulk.store import QUEUED, BulkStore, unavailable_on_redis_errors
from resnet_serve.api.pipeline.uploads import Upload
from resnet_serve.shared import keys as k
from resnet_serve.shared.errors import BulkStorageFull, IdempotencyKeyInUse, IdempotencyKeyReused

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


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str
    replayed: bool  # an earlier request with the same Idempotency-Key made this job


async def admit(
    store: BulkStore,
    uploads: list[Upload],
    *,
    model: str,
    top_k: int,
    digest: str,
    idempotency_key: str | None,
) -> Submitted:
    """Store the images and queue the job, or find the job this key already made."""
    job_id = uuid.uuid4().hex
    idem = store.keys.bulk_idempotency(idempotency_key) if idempotency_key else None
    async with unavailable_on_redis_errors():
        outcome, value = await store.redis.register_script(ADMIT)(
            keys=_admit_keys(store, job_id, idem),
            args=_admit_args(store, job_id, uploads, model, top_k, digest, idem),
        )
        if outcome == b"existing":
            return await _replay(store, cast(bytes, value).decode(), digest)
        if outcome == b"full":
            raise BulkStorageFull(
                "bulk uploads waiting in Redis have reached max_bulk_stored_bytes "
                f"({store.settings.max_bulk_stored_bytes}); try again later",
                retry_after_s=30,
            )
        try:
            await _store_images(store, job_id, uploads)
            await _mark_uploaded(store, job_id, idem)
            await _enqueue(store, job_id)
        except BaseException:
            with contextlib.suppress(RedisError):
                await _forget(store, job_id, idem)
            raise
    return Submitted(job_id, replayed=False)


def _admit_keys(store: BulkStore, job_id: str, idem: str | None) -> list[str]:
    keys = [store.keys.bulk_job(job_id), *store.ledger()]
    return [*keys, idem] if idem else keys


def _admit_args(
    store: BulkStore,
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
        math.ceil(store.settings.bulk_upload_ttl_s),
        k.BULK_UPLOAD_WINDOW_S,
        sum(len(upload.data) for upload in uploads),
        store.settings.max_bulk_stored_bytes,
        k.BULK_LEDGER_TOTAL,
        *(item for pair in state.items() for item in pair),
    ]


async def _store_images(store: BulkStore, job_id: str, uploads: list[Upload]) -> None:
    key = store.keys.bulk_images(job_id)
    ttl = math.ceil(store.settings.bulk_upload_ttl_s)
    for start in range(0, len(uploads), IMAGES_PER_WRITE):
        chunk = uploads[start : start + IMAGES_PER_WRITE]
        async with store.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={str(start + i): u.data for i, u in enumerate(chunk)})
            pipe.expire(key, ttl)
            await pipe.execute()


async def _mark_uploaded(store: BulkStore, job_id: str, idem: str | None) -> None:
    ttl = store.queued_ttl_s
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(store.keys.bulk_job(job_id), "uploaded", "1")
        pipe.expire(store.keys.bulk_job(job_id), ttl)
        if idem:
            pipe.expire(idem, ttl)
        await pipe.execute()


async def _enqueue(store: BulkStore, job_id: str) -> None:
    """Queue the job for a jobs-worker; arq ignores a job id it already holds, so a
    replay may call this again safely."""
    settings = store.settings
    await store.redis.enqueue_job(
        FUNCTION, job_id, _job_id=job_id, _expires=settings.bulk_upload_ttl_s
    )
    queue_ttl = settings.bulk_upload_ttl_s + settings.bulk_job_timeout_s + 60
    await store.redis.expire(store.keys.bulk_queue(), math.ceil(queue_ttl))


async def _replay(store: BulkStore, held: str, digest: str) -> Submitted:
    job_id, held_digest = held.split(" ", 1)
    if held_digest != digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different upload (files, model or "
            "top_k); use a new key for a new job"
        )
    fields = store.redis.hmget(store.keys.bulk_job(job_id), ["uploaded", "status"])
    state = await cast(Awaitable[list[bytes | None]], fields)
    if state[0] != b"1":
        raise IdempotencyKeyInUse(
            "a request with this Idempotency-Key is still storing its upload",
            retry_after_s=1,
        )
    if state[1] == QUEUED.encode():
        await _enqueue(store, job_id)  # heals a first request cut off before it queued
    return Submitted(job_id, replayed=True)


async def _forget(store: BulkStore, job_id: str, idem: str | None) -> None:
    await store.redis.delete(
        store.keys.bulk_job(job_id),
        store.keys.bulk_images(job_id),
        *([idem] if idem else []),
    )
    await store.release(job_id)

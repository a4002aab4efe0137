"""POST /v1/jobs and GET /v1/jobs/{id}: bulk jobs, run later by `resnet-serve jobs-worker`.

Distributed mode only: the upload waits in Redis, where any gateway can find the job
and any jobs-worker can run it. A standalone server answers 501 bulk_jobs_unavailable.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, cast

from fastapi import APIRouter, Header, Path, Request, Response

from resnet_serve.api.bulk.admission import admit
from resnet_serve.api.bulk.schemas import (
    JOB_RESPONSES,
    ImageResult,
    JobAccepted,
    JobError,
    JobProgress,
    JobStatus,
    JobStatusName,
)
from resnet_serve.api.bulk.store import BulkStore, JobState
from resnet_serve.api.bulk.uploads import payload_digest, read_bulk_uploads
from resnet_serve.api.dependencies import Gateway, GatewayDep
from resnet_serve.api.pipeline.params import ModelName, TopK
from resnet_serve.api.pipeline.schemas import PredictionOut
from resnet_serve.shared.errors import BulkJobsUnavailable, JobNotFound

router = APIRouter(prefix="/v1", tags=["jobs"])

_JOB_ID = re.compile(r"[0-9a-f]{32}")
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Resubmitting with the same key returns the same job (200); the same "
        "key with a different upload is a 422 idempotency_key_reused",
    ),
]
JobId = Annotated[str, Path(description="The id POST /v1/jobs answered", max_length=64)]

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _store(gateway: Gateway) -> BulkStore:
    store = gateway.bulk_store
    if store is None:
        raise BulkJobsUnavailable(
            "bulk jobs need distributed mode: run `resnet-serve api` with Redis and "
            "`resnet-serve jobs-worker`; this server runs standalone (`serve`)"
        )
    return store


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses={
        200: {"model": JobAccepted, "description": "Replay: this Idempotency-Key's job"},
        **JOB_RESPONSES,
    },
    openapi_extra=_BODY,
    summary="Submit many images as one bulk job",
)
async def submit_job(
    request: Request,
    response: Response,
    gateway: GatewayDep,
    top_k: TopK = 3,
    model: ModelName = None,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """Multipart `file` fields, or one zip (an `application/zip` body or a single
    multipart file). Answers 202 with the job id and a Location to poll; images that are
    not valid images are reported one by one in the results, they do not fail the job."""
    store = _store(gateway)
    info = gateway.classifier.model(model)
    async with gateway.body_limits() as body:
        uploads = await read_bulk_uploads(request, store.settings, body)
        digest = await asyncio.to_thread(payload_digest, uploads, info.name, top_k)
        submitted = await admit(
            store,
            uploads,
            model=info.name,
            top_k=top_k,
            digest=digest,
            idempotency_key=idempotency_key,
        )
        total = len(uploads)
    location = f"/v1/jobs/{submitted.job_id}"
    response.headers["Location"] = location
    status = "queued"
    if submitted.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
        state = await store.read(submitted.job_id)
        status = state.status if state else status
    return JobAccepted(
        job_id=submitted.job_id,
        status=cast(JobStatusName, status),
        total=total,
        location=location,
        replayed=submitted.replayed,
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatus,
    responses={code: JOB_RESPONSES[code] for code in (404, 501, 503)},
    summary="A bulk job's status, progress and per-image results",
)
async def job_status(gateway: GatewayDep, job_id: JobId) -> JobStatus:
    """Status (queued, running, done, failed), progress, and one entry per image in
    upload order: its top-k predictions, or its error with a stable code. Jobs and their
    results are deleted `bulk_result_ttl_s` after they finish; then this answers 404."""
    store = _store(gateway)
    state = await store.read(job_id) if _JOB_ID.fullmatch(job_id) else None
    if state is None:
        raise JobNotFound(f"no job {job_id!r}: it never existed or its results expired")
    return _status(state)


def _status(state: JobState) -> JobStatus:
    results = [_image(state, index, name) for index, name in enumerate(state.filenames)]
    expires_at = (
        datetime.now(UTC) + timedelta(seconds=state.expires_in_s) if state.expires_in_s else None
    )
    return JobStatus(
        job_id=state.job_id,
        status=cast(JobStatusName, state.status),
        model=state.model,
        top_k=state.top_k,
        created_at=datetime.fromtimestamp(state.created_at, UTC),
        started_at=_time(state.started_at),
        finished_at=_time(state.finished_at),
        expires_at=expires_at,
        progress=JobProgress(
            done=sum(r.status != "pending" for r in results),
            failed=sum(r.status == "failed" for r in results),
            total=len(results),
        ),
        error=JobError(**state.error) if state.error else None,
        results=results,
    )


def _image(state: JobState, index: int, filename: str) -> ImageResult:
    stored = state.results.get(index)
    if stored is None:
        return ImageResult(index=index, filename=filename, status="pending")
    if "error" in stored:
        error = JobError(**stored["error"])
        return ImageResult(index=index, filename=filename, status="failed", error=error)
    predictions = [
        PredictionOut(index=i, label=label, score=s) for i, label, s in stored["predictions"]
    ]
    return ImageResult(
        index=index,
        filename=filename,
        status="done",
        version=stored["version"],
        predictions=predictions,
    )


def _time(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None

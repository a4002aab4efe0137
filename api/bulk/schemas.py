"""Bulk job bodies (POST /v1/jobs, GET /v1/jobs/{id}), documented with examples."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from resnet_serve.api.pipeline.schemas import ErrorResponse, PredictionOut

JobStatusName = Literal["queued", "running", "done", "failed"]
_JOB_ID = "9b2f4c0d1e8a4f6b8c3d5e7f9a1b2c3d"


class JobAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": _JOB_ID,
                    "status": "queued",
                    "total": 3,
                    "location": f"/v1/jobs/{_JOB_ID}",
                    "replayed": False,
                }
            ]
        }
    )

    job_id: str
    status: JobStatusName
    total: int = Field(description="Images in the job")
    location: str = Field(description="Where to GET the job's status and results")
    replayed: bool = Field(
        description="True when an earlier request with the same Idempotency-Key made the job"
    )


class JobError(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"code": "not_an_image", "message": "..."}]}
    )

    code: str
    message: str


class ImageResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "index": 0,
                    "filename": "cat.jpg",
                    "status": "done",
                    "version": "1",
                    "predictions": [{"index": 285, "label": "Egyptian cat", "score": 0.71}],
                    "error": None,
                },
                {
                    "index": 1,
                    "filename": "notes.txt",
                    "status": "failed",
                    "version": None,
                    "predictions": None,
                    "error": {"code": "not_an_image", "message": "not an image"},
                },
            ]
        }
    )

    index: int = Field(description="Position in the upload (multipart order or zip order)")
    filename: str
    status: Literal["pending", "done", "failed"]
    version: str | None = None
    predictions: list[PredictionOut] | None = None
    error: JobError | None = None


class JobProgress(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"done": 2, "failed": 1, "total": 3}]}
    )

    done: int = Field(description="Images finished, failed ones included")
    failed: int
    total: int


class JobStatus(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": _JOB_ID,
                    "status": "done",
                    "model": "resnet18",
                    "top_k": 3,
                    "created_at": "2026-01-05T10:00:00Z",
                    "started_at": "2026-01-05T10:00:01Z",
                    "finished_at": "2026-01-05T10:00:02Z",
                    "expires_at": "2026-01-06T10:00:02Z",
                    "progress": {"done": 1, "failed": 0, "total": 1},
                    "error": None,
                    "results": [
                        {
                            "index": 0,
                            "filename": "cat.jpg",
                            "status": "done",
                            "version": "1",
                            "predictions": [{"index": 285, "label": "Egyptian cat", "score": 0.71}],
                            "error": None,
                        }
                    ],
                }
            ]
        }
    )

    job_id: str
    status: JobStatusName
    model: str
    top_k: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(None, description="When the job and results are deleted")
    progress: JobProgress
    error: JobError | None = Field(
        None, description="Why the whole job failed (images' own errors are in results)"
    )
    results: list[ImageResult]


JOB_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        404: "Unknown job (never existed, or its results expired), or unknown model",
        409: "The first request with this Idempotency-Key is still storing its upload",
        413: "Too many images, an image or the job too large",
        415: "Wrong content type",
        422: "Invalid parameter or archive, or Idempotency-Key reused for another upload",
        501: "Bulk jobs need distributed mode (resnet-serve api with Redis)",
        503: "Redis unreachable, not ready, or bulk upload storage full (see Retry-After)",
    }.items()
}

"""Bulk jobs' settings (POST /v1/jobs, distributed mode), part of `Settings`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BulkJobSettings(BaseModel):
    """Uploads wait in Redis, never on disk."""

    max_bulk_images: int = Field(1000, ge=1, description="Images per bulk job")
    max_bulk_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="One job's images (a zip: uncompressed) in bytes"
    )
    max_bulk_stored_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="All bulk uploads waiting in Redis together; beyond: 503 bulk_storage_full",
    )
    bulk_upload_ttl_s: float = Field(
        3600.0, ge=1, description="How long uploaded images wait in Redis for a jobs-worker"
    )
    bulk_result_ttl_s: float = Field(
        86400.0, ge=1, description="How long a finished job's status and results are kept"
    )
    bulk_job_timeout_s: float = Field(
        1800.0, ge=10, description="Longest run of one job; a crashed run resumes after it"
    )
    bulk_concurrency: int = Field(16, ge=1, description="Images one jobs-worker has in flight")

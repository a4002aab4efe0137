"""The error taxonomy: each error carries its HTTP status and a stable machine code.

Bodies are always `{"error": {"code", "message", "request_id"}}`.
"""

from __future__ import annotations

from typing import ClassVar


class ServeError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class EmptyBody(ServeError):
    status, code = 400, "empty_body"


class InvalidParameter(ServeError):
    status, code = 422, "invalid_parameter"


class InvalidTensor(ServeError):
    """A KServe v2 request whose tensors do not fit the model (name, shape, dtype, data)."""

    status, code = 400, "invalid_tensor"


class UnsupportedMediaType(ServeError):
    status, code = 415, "unsupported_media_type"


class NotAnImage(ServeError):
    status, code = 415, "not_an_image"


class CorruptImage(ServeError):
    status, code = 422, "corrupt_image"


class PayloadTooLarge(ServeError):
    status, code = 413, "payload_too_large"


class TooManyPixels(ServeError):
    status, code = 413, "too_many_pixels"


class TooManyFiles(ServeError):
    status, code = 413, "too_many_files"


class RequestTimeout(ServeError):
    """The request body did not arrive within body_timeout_s."""

    status, code = 408, "request_timeout"


class UnknownModel(ServeError):
    status, code = 404, "unknown_model"


class NotFound(ServeError):
    status, code = 404, "not_found"


class QueueFull(ServeError):
    status, code = 503, "queue_full"


class NotReady(ServeError):
    status, code = 503, "not_ready"


class BrokerUnavailable(ServeError):
    status, code = 503, "broker_unavailable"


class NoWorkers(ServeError):
    """Distributed mode: no live worker serves the model (none started, or the last one
    stopped); a scale-from-zero wait, where set, has passed."""

    status, code = 503, "no_workers"


class DeadlineExceeded(ServeError):
    status, code = 504, "deadline_exceeded"


class ClientClosed(ServeError):
    """The client left before its job ran: the job is skipped (nobody reads this)."""

    status, code = 499, "client_closed"


class InferenceFailed(ServeError):
    status, code = 500, "inference_failed"


class DeadLettered(ServeError):
    status, code = 500, "dead_lettered"


class BulkJobsUnavailable(ServeError):
    status, code = 501, "bulk_jobs_unavailable"


class JobNotFound(ServeError):
    status, code = 404, "job_not_found"


class IdempotencyKeyInUse(ServeError):
    """The first request with this key is still storing its upload."""

    status, code = 409, "idempotency_key_in_use"


class IdempotencyKeyReused(ServeError):
    """The key was used before for a different payload."""

    status, code = 422, "idempotency_key_reused"


class InvalidArchive(ServeError):
    status, code = 422, "invalid_archive"


class BulkStorageFull(ServeError):
    status, code = 503, "bulk_storage_full"


class UploadExpired(ServeError):
    """A bulk job's images expired in Redis before a jobs-worker ran them."""

    status, code = 410, "upload_expired"


class JobTimeout(ServeError):
    status, code = 504, "job_timeout"


def error_for_code(code: str, message: str) -> ServeError:
    """Rebuild an error that crossed a process boundary as its code (unknown: internal)."""
    for cls in _subclasses(ServeError):
        if cls.code == code:
            return cls(message)
    return ServeError(message)


def _subclasses(cls: type[ServeError]) -> list[type[ServeError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def error_body(code: str, message: str, request_id: str | None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}

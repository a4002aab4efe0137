"""What the Python client returns and raises: typed views of the /v1 API's bodies.

Kept apart from the gateway's own response models so a client install needs neither
FastAPI nor the api package; the client tests run against a real server, so the two
cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    # A newer server may add fields; an older client still reads what it knows.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Prediction(_Body):
    index: int
    label: str
    score: float


class Timings(_Body):
    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float


class Classification(_Body):
    request_id: str
    model: str
    version: str
    predictions: list[Prediction]
    timings: Timings
    batch_size: int
    cached: bool
    # "random": the server's model was built from random weights, for plumbing and
    # benchmarks only; its predictions mean nothing.
    weights: Literal["pretrained", "random"] = "pretrained"


class ErrorInfo(_Body):
    code: str
    message: str
    request_id: str | None = None


class BatchItem(_Body):
    filename: str
    result: Classification | None = None
    error: ErrorInfo | None = None


class WorkerSummary(_Body):
    worker_id: str
    engine: str
    precision: str
    images_per_s: float


class ModelSummary(_Body):
    name: str
    version: str
    engine: str
    precision: str
    input_size: int
    weights: Literal["pretrained", "random"] = "pretrained"
    workers: list[WorkerSummary] = []


class Health(_Body):
    live: bool
    ready: bool
    models: list[ModelSummary] = []


RETRYABLE_STATUSES = frozenset({429, 503})


class ServeClientError(Exception):
    """The server answered with an error (its stable `code`), or never answered."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """Overload or not ready yet: the same request may succeed later."""
        return self.status in RETRYABLE_STATUSES

    @classmethod
    def from_response(cls, response: httpx.Response) -> ServeClientError:
        try:
            error = ErrorInfo.model_validate(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            error = ErrorInfo(
                code="http_error", message=response.text[:200] or response.reason_phrase
            )
        return cls(
            response.status_code,
            error.code,
            error.message,
            request_id=error.request_id or response.headers.get("x-request-id"),
            retry_after_s=_retry_after(response.headers.get("retry-after")),
        )


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the server sends seconds; an HTTP date is not honoured)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None

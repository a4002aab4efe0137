"""The gateway's errors as gRPC status codes a client acts on.

A caller's mistake is INVALID_ARGUMENT (a bad tensor, a file too large or not an
image), never UNKNOWN; a full queue or budget RESOURCE_EXHAUSTED; a broker that is down,
a gateway draining or a model without workers UNAVAILABLE; both with retry information
in the trailing metadata: `grpc-retry-pushback-ms` (gRPC's own retry policies obey it)
and `retry-after` in seconds, as HTTP's header. Every error also carries the stable
error code (`error-code`) and the request id (`x-request-id`).
"""

from __future__ import annotations

import grpc

from resnet_serve.shared.errors import ServeError

_BY_CODE: dict[str, grpc.StatusCode] = {
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "bulk_storage_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "not_ready": grpc.StatusCode.UNAVAILABLE,
    "broker_unavailable": grpc.StatusCode.UNAVAILABLE,
    "no_workers": grpc.StatusCode.UNAVAILABLE,
    "client_closed": grpc.StatusCode.CANCELLED,
}
_BY_STATUS: dict[int, grpc.StatusCode] = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(error: ServeError) -> grpc.StatusCode:
    if error.code in _BY_CODE:
        return _BY_CODE[error.code]
    if error.status in _BY_STATUS:
        return _BY_STATUS[error.status]
    if 400 <= error.status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def trailers(
    code: str, request_id: str, retry_after_s: float | None
) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of an error."""
    pairs = [("error-code", code), ("x-request-id", request_id)]
    if retry_after_s is not None:
        pairs += [
            ("grpc-retry-pushback-ms", str(max(1, round(retry_after_s * 1000)))),
            ("retry-after", str(max(1, round(retry_after_s)))),
        ]
    return tuple(pairs)

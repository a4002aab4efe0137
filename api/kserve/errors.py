"""/v2's errors in the protocol's body, `{"error": "<message>"}`, with the gateway's
stable code still counted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from resnet_serve.api.dependencies import gateway_of
from resnet_serve.api.error_handlers import client_closed
from resnet_serve.api.kserve.parsing import validation_message
from resnet_serve.shared.errors import ServeError

log = logging.getLogger(__name__)

# Statuses the protocol's clients act on as they are; any other client error is a 400.
_KEPT_STATUSES = {404, 405, 413, 503, 504}


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The protocol's body; the stable code is still counted (errors_total{code})."""
    gateway_of(request).metrics.errors.labels(code).inc()
    if 400 <= status < 500 and status not in _KEPT_STATUSES:
        status = 400
    return JSONResponse({"error": message}, status, headers=headers)


class KServeRoute(APIRoute):
    """Turns the gateway's errors into the protocol's error body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServeError as exc:
                return error_response(request, exc.status, exc.code, exc.message, exc.headers())
            except RequestValidationError as exc:
                return error_response(request, 400, "invalid_tensor", validation_message(exc))
            except ClientDisconnect as exc:
                return await client_closed(request, exc)
            except Exception:
                log.exception("unhandled error")
                return error_response(request, 500, "internal_error", "internal server error")

        return handle

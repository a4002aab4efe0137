"""Every failure becomes `{"error": {"code", "message", "request_id"}}` with a stable code."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from resnet_serve.api.dependencies import gateway_of
from resnet_serve.shared.errors import ServeError, error_body
from resnet_serve.shared.logs import Summarised, request_id_var

log = logging.getLogger(__name__)
# A Redis outage refuses every request: one line per kind per 10 s, with a count.
_refusals = Summarised(log)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
# nginx's status for "the client closed the connection before the response": counted
# as its own outcome (requests_total{status="499"}, errors_total{code="client_closed"}),
# never as a server error.
CLIENT_CLOSED_STATUS = 499
CLIENT_CLOSED = "client_closed"


def _json(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    gateway_of(request).metrics.errors.labels(code).inc()
    return JSONResponse(error_body(code, message, request_id_var.get()), status, headers=headers)


async def _serve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServeError)
    if exc.status >= 500:
        _refusals.warning(exc.code, "%s: %s", exc.code, exc.message)
    return _json(request, exc.status, exc.code, exc.message, exc.headers())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{where}: {error.get('msg')}")
    return _json(request, 422, "invalid_parameter", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _json(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def client_closed(request: Request, exc: Exception) -> Response:
    """The client hung up mid-request: one line, no traceback, no 500."""
    gateway_of(request).metrics.errors.labels(CLIENT_CLOSED).inc()
    log.info(
        "%s: the client closed the connection during %s %s",
        CLIENT_CLOSED,
        request.method,
        request.url.path,
    )
    return Response(status_code=CLIENT_CLOSED_STATUS)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return _json(request, 500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(ClientDisconnect, client_closed)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

"""Admission on the gateway's side, in one place: queue places reserved for a request's
jobs before anything is decoded (`queue_places`), and uploads refused at the edge while
the queue is full (standalone: or too long for a new request's deadline), before
routing, reading the body, parsing or decoding anything (`AdmissionGate`). The broker
decides (api/broker/admission_scripts.py across gateways, worker/inprocess.py
standalone).

Under overload almost every request is refused, and a closed-loop client sends the next
one as soon as the last is answered: what a refusal costs in CPU is taken from
inference in the same process. This gate answers the 503 that admission would give, for
a few microseconds of work, whenever the broker already knows there is no place.
A reservation (`queue_places`) still decides every request that passes the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from resnet_serve.shared.broker import Broker, Reservation
from resnet_serve.shared.errors import QueueFull, error_body
from resnet_serve.shared.logs import request_id_var
from resnet_serve.shared.metrics import Metrics


@contextlib.asynccontextmanager
async def queue_places(
    broker: Broker, model: str, count: int, deadline: float | None = None
) -> AsyncIterator[Reservation]:
    """`count` queue places for the block's jobs, or QueueFull (503) at once (also when
    they would not be done by `deadline`); the places the block did not use are given
    back when it ends."""
    reservation = await broker.reserve(model, count, deadline)
    try:
        yield reservation
    finally:
        await broker.release(reservation)


GATED_PATHS = frozenset({"/v1/classify", "/v1/classify/batch"})
# A refused upload this small whose body has arrived is read and dropped, so that its
# connection serves the client's next request: a closed one makes every refusal cost a
# new connection on both sides. A larger or slower body is answered at once and its
# connection closed (api/limits/unfinished.py).
DRAIN_MAX_BYTES = 1024 * 1024
DRAIN_WAIT_S = 0.05


async def _drain_small_body(scope: Scope, receive: Receive) -> None:
    declared = dict(scope["headers"]).get(b"content-length", b"").strip()
    if not declared.isdigit() or int(declared) > DRAIN_MAX_BYTES:
        return

    async def drained() -> None:
        while (message := await receive())["type"] == "http.request":
            if not message.get("more_body", False):
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained(), DRAIN_WAIT_S)


@dataclass(frozen=True, slots=True)
class _Route:
    """What RequestContext labels the request's metrics with."""

    path: str


class AdmissionGate:
    def __init__(self, app: ASGIApp, broker: Broker, metrics: Metrics) -> None:
        self.app = app
        self.broker = broker
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in GATED_PATHS
            and self.broker.saturated()
        ):
            await _drain_small_body(scope, receive)
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        scope["route"] = _Route(scope["path"])
        error = QueueFull(
            "the inference queue is full, or too long for this request to be done in time",
            retry_after_s=self.broker.retry_after_s(),
        )
        self.metrics.errors.labels(error.code).inc()
        body = json.dumps(error_body(error.code, error.message, request_id_var.get())).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in error.headers().items()),
        ]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

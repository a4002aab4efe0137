"""One gRPC request as the gateway counts it: its id, when it arrived, its deadline, and
its metrics under the HTTP families (`route` is the RPC's path, `status` its gRPC code
name), so dashboards show both protocols side by side."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

import grpc

from resnet_serve.api.grpc.status import status_of
from resnet_serve.shared.errors import ServeError
from resnet_serve.shared.logs import request_id_var
from resnet_serve.shared.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata (text values; keys arrive lower-case)."""
    return {
        key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)
    }


@dataclass(frozen=True, slots=True)
class Call:
    route: str
    request_id: str
    received_at: float  # time.time()
    deadline: float | None  # the client's gRPC deadline on time.time()'s clock
    metrics: Metrics

    @classmethod
    def start(cls, context: grpc.aio.ServicerContext, route: str, metrics: Metrics) -> Call:
        offered = metadata_of(context).get("x-request-id", "")
        now = time.time()
        remaining = context.time_remaining()
        return cls(
            route=route,
            request_id=offered if _CLIENT_ID.match(offered) else uuid.uuid4().hex,
            received_at=now,
            deadline=None if remaining is None else now + remaining,
            metrics=metrics,
        )

    def for_message(self, message_id: str) -> Call:
        """One request of a stream: its own id and arrival, the stream's deadline."""
        request_id = message_id if _CLIENT_ID.match(message_id) else uuid.uuid4().hex
        return replace(self, request_id=request_id, received_at=time.time())

    async def counted(self, work: Awaitable[T]) -> T:
        """`work`'s result, counted; an unexpected error becomes INTERNAL, logged."""
        token = request_id_var.set(self.request_id)
        self.metrics.in_flight.inc()
        status, start = "INTERNAL", time.perf_counter()
        try:
            result = await work
            status = "OK"
            return result
        except ServeError as exc:
            status = status_of(exc).name
            self.metrics.errors.labels(exc.code).inc()
            raise
        except asyncio.CancelledError:
            status = "CANCELLED"
            self.metrics.errors.labels("client_closed").inc()
            raise
        except Exception:
            log.exception("unhandled error in %s", self.route)
            self.metrics.errors.labels("internal_error").inc()
            raise ServeError("internal server error") from None
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(self.route, status).inc()
            self.metrics.request_seconds.labels(self.route).observe(time.perf_counter() - start)
            request_id_var.reset(token)

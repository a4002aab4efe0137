"""Request id, in-flight gauge and per-route request metrics, as plain ASGI (no
BaseHTTPMiddleware overhead on the hot path)."""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resnet_serve.shared.logs import request_id_var
from resnet_serve.shared.metrics import Metrics

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _CLIENT_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        scope["state"]["received_at"] = time.time()
        token = request_id_var.set(request_id)
        status = 500
        start = time.perf_counter()
        root_path = scope.get("root_path", "")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            path = _route_label(scope, root_path)
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(time.perf_counter() - start)
            request_id_var.reset(token)


def _route_label(scope: Scope, root_path: str) -> str:
    """The route template; for a mounted app (the docs assets) its mount path plus
    `/{path}`, so only requests no route matched count as "unmatched"."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    mounted = scope.get("root_path", "")
    if "endpoint" in scope and mounted != root_path:
        return f"{mounted[len(root_path) :]}/{{path}}"
    return "unmatched"

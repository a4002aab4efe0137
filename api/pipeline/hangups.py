"""Requests whose client hung up are cancelled, not carried to the end.

Once an inference request's body has arrived, its connection is watched; when the
client goes (`http.disconnect`), the handler is cancelled: its queue place is given back,
and its job, no longer awaited, is skipped before inference (standalone: the batcher
drops it; distributed: the worker is told, `resnet_serve_cancelled_jobs_total`). The
request counts as 499 `client_closed`, as a hang-up during the upload does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resnet_serve.api.error_handlers import CLIENT_CLOSED, CLIENT_CLOSED_STATUS
from resnet_serve.shared.metrics import Metrics

log = logging.getLogger(__name__)

WATCHED = re.compile(r"^/v1/classify(/batch)?$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$")


class _Connection:
    """The request's receive channel, watched for the client leaving once its body is in."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._body_done = asyncio.Event()
        self._gone = asyncio.Event()

    async def receive(self) -> Message:
        """What the handler reads through."""
        if self._gone.is_set():
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self._body_done.set()
        elif message["type"] == "http.disconnect":
            self._gone.set()
        return message

    async def left(self) -> None:
        """Returns when the client has gone, after its body arrived."""
        await self._body_done.wait()
        while not self._gone.is_set():
            if (await self._receive())["type"] == "http.disconnect":
                self._gone.set()


async def _handled(handling: Awaitable[None], leaving: Awaitable[None]) -> bool:
    """True when the handler finished first (its error raised); False when the client
    left first, the handler then cancelled."""
    handler, watcher = asyncio.ensure_future(handling), asyncio.ensure_future(leaving)
    try:
        await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if handler.done():
            handler.result()
            return True
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
        return False
    finally:
        watcher.cancel()
        handler.cancel()


class CancelOnHangUp:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not WATCHED.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        connection = _Connection(receive)
        started = False

        async def app_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        if await _handled(self.app(scope, connection.receive, app_send), connection.left()):
            return
        self.metrics.errors.labels(CLIENT_CLOSED).inc()
        log.info("%s: the client left while %s waited; cancelled", CLIENT_CLOSED, scope["path"])
        if not started:  # for the request metrics: the server drops it, the client is gone
            await send({"type": "http.response.start", "status": CLIENT_CLOSED_STATUS})
            await send({"type": "http.response.body", "body": b""})

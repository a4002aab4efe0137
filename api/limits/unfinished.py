"""Close the connection after answering a request whose body did not finish arriving.

An answer sent before the body is complete (408 for a body too slow, 413 for one too
large, 503 when admission or a budget refuses, 401 before reading it) would otherwise
leave the connection open: the server keeps reading the rest of the body to reach the
next request, so a client that dribbles a byte now and then holds its connection, and a
place under `max_connections`, for ever. With `Connection: close` on such an answer,
uvicorn closes the connection once the answer is sent.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CLOSE = (b"connection", b"close")


def _declares_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


class CloseUnfinishedBodies:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _declares_body(scope):
            await self.app(scope, receive, send)
            return
        finished = False

        async def tracking_receive() -> Message:
            nonlocal finished
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                finished = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not finished:
                headers = list(message.get("headers", []))
                if _CLOSE not in headers:
                    message["headers"] = [*headers, _CLOSE]
            await send(message)

        await self.app(scope, tracking_receive, closing_send)

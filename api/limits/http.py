"""HTTP server limits uvicorn lacks, on its httptools (llhttp) protocol.

uvicorn 0.55 has no header, body or connection bound of its own on httptools:
`limit_concurrency` answers 503 to new requests but keeps accepting connections, a
connection that never finishes its headers is kept for ever, and httptools buffers a
header of any size. h11 bounds headers, but parsing in Python costs ~3x llhttp's CPU per
request, and under a flood of refusals that CPU is taken from inference (docs/
reliability.md). This protocol adds, on httptools:

- a header bound: a request line and headers over `max_header_bytes` get a JSON 431 and
  the connection closed, once they are complete or once that many bytes of an
  unfinished head have arrived (so a head's buffer grows to that plus one read, no more);
- a header deadline: a request's line and headers must all arrive within
  `header_timeout_s` of their first byte (or of the connection opening), else the
  connection is closed;
- a connection cap: past `max_connections` open connections, the connection sending
  its request body slowest, when below `min_body_rate_bytes_s` on average (grace or
  not: the server is full), is closed to make room; with none such, the new one is
  closed at once.

Idle keep-alive connections close after `keep_alive_timeout_s` (uvicorn's own); a
request body must arrive within `body_timeout_s` (api/pipeline/uploads.py, 408).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from resnet_serve.shared.errors import error_body
from resnet_serve.shared.logs import Summarised
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)
_refused = Summarised(log)  # an attack refuses by the thousand: a line per 10 s


def _too_large_answer(limit: int) -> bytes:
    body = json.dumps(
        error_body("headers_too_large", f"request line and headers exceed {limit} bytes", None)
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 2048
    min_body_rate_bytes_s: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # awaiting or reading a request line and headers
        self._head_began = False  # ... and its first byte has come
        self._head_reads = 0  # bytes of the reads wholly inside an unfinished head
        self._head_bytes = 0  # the head's size, from its parsed line and headers
        self._body_since: float | None = None  # when the current body began to arrive
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._evict_slowest_body():
            _refused.warning("refusals", "refused a connection: max_connections open")
            transport.abort()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        # A read wholly inside one head counts; the read a head began in may hold the
        # end of the previous body, so it counts only once that head is complete.
        counts = self._in_head and self._head_began
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head:
            self._head_reads += len(data) if counts else 0
            if self._head_reads > self.max_header_bytes:
                self._refuse_head()
                return
        elif self._body_since is not None:
            self._body_bytes += len(data)
        if self._in_head and self._head_began:
            self._arm()  # a request line or headers still incomplete: the clock runs
        else:
            self._disarm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_began = True, True
        self._head_reads = self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF

    # After a refusal, the rest of the read (a body, a pipelined request) is parsed
    # still: nothing of it may reach the app.
    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        if self._head_bytes > self.max_header_bytes:
            self._refuse_head()
            return
        self._in_head = False
        self._body_since, self._body_bytes = self.loop.time(), 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.transport.is_closing():
            super().on_message_complete()
        self._in_head, self._head_began, self._body_since = True, False, None

    def _refuse_head(self) -> None:
        _refused.warning("headers", "refused a request: headers over max_header_bytes")
        self.transport.write(_too_large_answer(self.max_header_bytes))
        self.transport.close()

    def _body_rate(self, now: float) -> float | None:
        if self._body_since is None or self.transport.is_closing():
            return None
        return self._body_bytes / max(now - self._body_since, 1e-3)

    def _evict_slowest_body(self) -> bool:
        """At the cap: close the connection whose body arrives slowest, if it is below
        the minimum rate. True if one was closed."""
        now = self.loop.time()
        rates = [
            (rate, other)
            for other in self.connections
            if isinstance(other, GuardedHttpToolsProtocol)
            and (rate := other._body_rate(now)) is not None
            and rate < self.min_body_rate_bytes_s
        ]
        if not rates:
            return False
        _, slowest = min(rates, key=lambda pair: pair[0])
        _refused.warning("evictions", "at max_connections: closed the slowest body to make room")
        slowest.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with this process's limits."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
            "min_body_rate_bytes_s": settings.min_body_rate_bytes_s,
        },
    )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run keyword arguments for the limits."""
    return {"http": protocol_for(settings), "timeout_keep_alive": settings.keep_alive_timeout_s}

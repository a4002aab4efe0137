"""HTTP server limits uvicorn lacks, on its h11 protocol.

uvicorn 0.54 bounds the request line and headers only through h11
(`h11_max_incomplete_event_size`; httptools has no bound) and has no header, body or
connection bound of its own: `limit_concurrency` answers 503 to new requests but keeps
accepting connections, and a connection that never finishes its headers is kept for
ever. This protocol adds:

- a header deadline: a request's line and headers must all arrive within
  `header_timeout_s` of their first byte (or of the connection opening), else the
  connection is closed;
- a connection cap: past `max_connections` open connections, a new one is closed at once.

Headers are bounded in size (and so in count) by `max_header_bytes` through h11 (a 400
past it); idle keep-alive connections close after `keep_alive_timeout_s` (uvicorn's own);
a request body must arrive within `body_timeout_s` (api/pipeline/uploads.py, 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    max_connections: int = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d open (max_connections)", len(self.connections))
            transport.abort()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # a request line or headers still incomplete: the clock runs
        else:
            self._disarm()

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
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class with this process's limits."""
    return type(
        "ConfiguredH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_connections": settings.max_connections,
        },
    )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run keyword arguments for the limits."""
    return {
        "http": protocol_for(settings),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
    }

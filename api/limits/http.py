"""HTTP server limits uvicorn lacks, on its h11 protocol.

uvicorn 0.54 bounds the request line and headers only through h11
(`h11_max_incomplete_event_size`; httptools has no bound) and has no header, body or
connection bound of its own: `limit_concurrency` answers 503 to new requests but keeps
accepting connections, and a connection that never finishes its headers is kept for
ever. This protocol adds:

- a header deadline: a request's line and headers must all arrive within
  `header_timeout_s` of their first byte (or of the connection opening), else the
  connection is closed;
- a connection cap: past `max_connections` open connections, the connection sending
  its request body slowest, when below `min_body_rate_bytes_s` on average (grace or
  not: the server is full), is closed to make room; with none such, the new one is
  closed at once.

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

from resnet_serve.shared.logs import Summarised
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)
_refused = Summarised(log)  # an attack refuses by the thousand: a line per 10 s


class GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    max_connections: int = 2048
    min_body_rate_bytes_s: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
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
        super().data_received(data)
        if self.conn.their_state is h11.SEND_BODY:
            if self._body_since is None:
                self._body_since, self._body_bytes = self.loop.time(), 0
            self._body_bytes += len(data)
        else:
            self._body_since = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # a request line or headers still incomplete: the clock runs
        else:
            self._disarm()

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
            if isinstance(other, GuardedH11Protocol)
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
            "min_body_rate_bytes_s": settings.min_body_rate_bytes_s,
        },
    )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run keyword arguments for the limits."""
    return {
        "http": protocol_for(settings),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
    }

"""Closed-loop HTTP load for fault tests and benchmarks/bench_faults.py: N clients, each
sending its next request as soon as the last is answered, every outcome recorded."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True, slots=True)
class Outcome:
    sent_at: float  # monotonic
    answered_at: float
    status: int  # 0: no HTTP answer at all (connection error, client timeout)
    code: str  # the error code, "" for a 200
    request_id: str


@dataclass
class Load:
    url: str
    images: list[bytes]
    clients: int = 32
    timeout_s: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Outcome]:
        """Stop sending; wait for every request in flight to be answered."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 10)
        return list(self.outcomes)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            i = n
            while not self._stop.is_set():
                data = self.images[i % len(self.images)]
                i += self.clients
                sent = time.monotonic()
                status, code, request_id, pause = 0, "no_answer", "", 0.0
                try:
                    response = client.post(
                        f"{self.url}/v1/classify",
                        content=data,
                        headers={"content-type": "image/png"},
                    )
                    status = response.status_code
                    body = response.json()
                    request_id = response.headers.get("x-request-id", "")
                    code = "" if status == 200 else str(body["error"]["code"])
                    # As a well-behaved client does: honour Retry-After (capped at 1 s).
                    pause = min(float(response.headers.get("retry-after", 0)), 1.0)
                except (httpx.HTTPError, ValueError, KeyError):
                    pause = 0.1
                with self._lock:
                    self.outcomes.append(Outcome(sent, time.monotonic(), status, code, request_id))
                self._stop.wait(pause)


def in_flight_at(outcomes: list[Outcome], moment: float) -> list[Outcome]:
    return [o for o in outcomes if o.sent_at <= moment < o.answered_at]


def by_code(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(f"{o.status} {o.code}".strip() for o in outcomes if o.status != 200)

"""The interface between a gateway and whatever runs inference (in-process or Redis)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from resnet_serve.shared.errors import ServeError
from resnet_serve.shared.jobs import Job, ModelInfo, Result, WorkerInfo


@dataclass(slots=True)
class Reservation:
    """Queue places set aside for one request's jobs before its images are decoded:
    admission is decided first, so a refused request costs no decode."""

    model: str
    places: list[str] = field(default_factory=list)

    def take(self) -> str | None:
        """One place, for one job; None when all are used."""
        return self.places.pop() if self.places else None


class Broker(Protocol):
    async def start(self) -> None:
        """Load, warm and start background work; returns once ready to serve."""

    async def close(self) -> None:
        """Stop taking jobs, finish or fail what is in flight, release resources."""

    def ready(self) -> bool:
        """True while jobs can be accepted and answered."""

    def not_ready_error(self) -> ServeError:
        """Why the broker is not ready, as the error a request gets (a 503)."""

    def models(self) -> Mapping[str, ModelInfo]:
        """The models this broker can serve, by name."""

    def workers(self, model: str) -> list[WorkerInfo]:
        """The live workers serving `model`, as each announces itself."""

    def saturated(self) -> bool:
        """True when it is already known that no request could be admitted now (the
        default model's queue is full, or standalone, too long for a new request's
        deadline); False when unsure. Read before routing, for
        every upload: it must cost no I/O."""

    def retry_after_s(self, model: str | None = None) -> float:
        """Seconds until the queue of `model` (the default one when None) likely has
        room: its depth over the measured throughput; 1 when unknown."""

    async def reserve(self, model: str, count: int, deadline: float | None = None) -> Reservation:
        """Set aside `count` queue places, or raise QueueFull (503) at once: when the
        queue is full, or when the work ahead would not be done by `deadline` (wall
        clock; None: no deadline applies) by the rule in shared/admission.py."""

    async def release(self, reservation: Reservation) -> None:
        """Give back the places a reservation did not use."""

    async def submit(self, job: Job, place: str | None = None) -> Result:
        """Run one job (in a reserved place when `place` is given); raises a
        `resnet_serve.shared.errors.ServeError` on rejection or failure."""

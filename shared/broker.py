"""The interface between a gateway and whatever runs inference (in-process or Redis)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from resnet_serve.shared.errors import ServeError
from resnet_serve.shared.jobs import Job, ModelInfo, Result


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

    async def submit(self, job: Job) -> Result:
        """Run one job; raises a `resnet_serve.shared.errors.ServeError` on rejection or failure."""

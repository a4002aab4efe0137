"""What the gateway holds for its lifetime (`Gateway`, built by api/app.py), and the typed
FastAPI dependencies that hand it to handlers: no handler reads untyped `app.state`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from resnet_serve.api.bulk.store import BulkStore
from resnet_serve.api.kserve.parsing import HeaderParser
from resnet_serve.api.limits.budget import Budgets
from resnet_serve.api.pipeline.classifier import Classifier
from resnet_serve.api.pipeline.decoding import DecodePool
from resnet_serve.api.pipeline.uploads import BodyLimits, body_limits
from resnet_serve.shared.broker import Broker
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings


@dataclass(slots=True)
class Gateway:
    settings: Settings
    metrics: Metrics
    broker: Broker
    budgets: Budgets
    pool: DecodePool
    kserve_parser: HeaderParser
    bulk_store: BulkStore | None  # bulk jobs live in Redis: distributed mode only
    classifier: Classifier
    startup_failure: str | None = None  # why the broker could not start

    def body_limits(self) -> AbstractAsyncContextManager[BodyLimits]:
        """A request's share of the body budget, returned when the block ends."""
        return body_limits(
            self.budgets.bodies,
            self.settings.body_timeout_s,
            self.settings.min_body_rate_bytes_s,
            self.settings.body_rate_grace_s,
        )


def gateway_of(request: Request) -> Gateway:
    """For code that is not a handler (error handlers) and has only the request."""
    gateway: Gateway = request.app.state.gateway
    return gateway


# The dependencies are `async def`: FastAPI runs a plain `def` one in its thread pool, a
# round trip through another thread on every request.
async def _gateway(request: Request) -> Gateway:
    return gateway_of(request)


async def _classifier(request: Request) -> Classifier:
    return gateway_of(request).classifier


GatewayDep = Annotated[Gateway, Depends(_gateway)]
ClassifierDep = Annotated[Classifier, Depends(_classifier)]

"""create_app(settings, broker): the FastAPI gateway, with background work in lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager

from fastapi import FastAPI

from resnet_serve import __version__
from resnet_serve.api import health
from resnet_serve.api.auth import ApiKeyAuth, load_api_keys
from resnet_serve.api.broker.redis_broker import RedisBroker
from resnet_serve.api.bulk import routes as bulk_routes
from resnet_serve.api.bulk.store import BulkStore
from resnet_serve.api.dependencies import Gateway
from resnet_serve.api.error_handlers import install_error_handlers
from resnet_serve.api.kserve import routes as kserve_routes
from resnet_serve.api.kserve import statistics_routes as kserve_statistics
from resnet_serve.api.kserve.parsing import HeaderParser
from resnet_serve.api.limits.budget import build_budgets
from resnet_serve.api.limits.unfinished import CloseUnfinishedBodies
from resnet_serve.api.middleware import RequestContext
from resnet_serve.api.pipeline.admission import AdmissionGate
from resnet_serve.api.pipeline.cache import ResponseCache
from resnet_serve.api.pipeline.classifier import Classifier
from resnet_serve.api.pipeline.decoding import DecodePool
from resnet_serve.api.pipeline.hangups import CancelOnHangUp
from resnet_serve.api.v1 import routes as v1_routes
from resnet_serve.api.web import page
from resnet_serve.api.web.docs import install_docs
from resnet_serve.shared.broker import Broker
from resnet_serve.shared.cpus import thread_count
from resnet_serve.shared.heap import freeze_startup_heap
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)


def build_gateway(settings: Settings, broker: Broker, metrics: Metrics) -> Gateway:
    budgets = build_budgets(settings)
    pool = DecodePool(
        thread_count(settings.decode_threads), settings.max_queue, metrics, budgets.decoding
    )
    cache = ResponseCache(settings.response_cache_entries, metrics)
    return Gateway(
        settings=settings,
        metrics=metrics,
        broker=broker,
        budgets=budgets,
        pool=pool,
        kserve_parser=HeaderParser(settings.kserve_parse_processes, budgets.bodies),
        # Bulk jobs live in Redis: distributed mode only (/v1/jobs answers 501 otherwise).
        bulk_store=BulkStore(settings) if isinstance(broker, RedisBroker) else None,
        classifier=Classifier(settings, broker, pool, cache),
    )


def lifespan(gateway: Gateway) -> Callable[[FastAPI], AsyncContextManager[None]]:
    """The broker starts (loads and warms) in the background; everything closes at exit."""

    @contextlib.asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(gateway.broker.start(), name="broker-start")

        def started(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                return
            if task.exception() is not None:
                gateway.startup_failure = str(task.exception())
                log.critical("startup failed: %s", gateway.startup_failure)
            else:
                freeze_startup_heap()

        starting.add_done_callback(started)
        grpc_server = None
        if gateway.settings.grpc_port:
            from resnet_serve.api.grpc.server import GrpcServer

            grpc_server = GrpcServer(gateway)
            await grpc_server.start()
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(gateway.settings.request_timeout_s)
            if not starting.done():
                starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            await gateway.broker.close()
            if gateway.bulk_store is not None:
                await gateway.bulk_store.close()
            gateway.pool.close()
            gateway.kserve_parser.close()

    return running


def create_app(settings: Settings, broker: Broker, metrics: Metrics) -> FastAPI:
    """The gateway. The broker loads and warms in the background: /healthz answers at
    once, /readyz only when the broker is ready."""
    gateway = build_gateway(settings, broker, metrics)
    app = FastAPI(
        title="resnet-serve",
        summary="ImageNet classification over REST with dynamic batching",
        version=__version__,
        lifespan=lifespan(gateway),
        # /docs, /redoc and /openapi.json: api/web/docs.py, from local assets.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway  # handed to handlers by api/dependencies.py
    app.include_router(v1_routes.router)
    app.include_router(health.router)
    app.include_router(health.models_router)
    # Documented where they work; a standalone server still answers them with a 501.
    app.include_router(bulk_routes.router, include_in_schema=gateway.bulk_store is not None)
    install_docs(app)
    app.include_router(kserve_statistics.router)  # before /v2/models/{m}
    app.include_router(kserve_routes.router)
    app.include_router(page.router)
    install_error_handlers(app)
    _add_middleware(app, settings, broker, metrics)
    return app


def _add_middleware(app: FastAPI, settings: Settings, broker: Broker, metrics: Metrics) -> None:
    """Added innermost first: refusal under overload runs before routing and before
    watching for hang-ups (a refusal is answered at once: nothing to watch), after auth."""
    app.add_middleware(CancelOnHangUp, metrics=metrics)
    app.add_middleware(AdmissionGate, broker=broker, metrics=metrics)
    keys = load_api_keys(settings)
    if keys:
        exempt = [path.strip() for path in settings.auth_exempt_paths.split(",") if path.strip()]
        app.add_middleware(ApiKeyAuth, keys=keys, exempt_paths=exempt, metrics=metrics)
    app.add_middleware(RequestContext, metrics=metrics)  # ids and metrics for all
    app.add_middleware(CloseUnfinishedBodies)  # outermost: sees every answer

"""Liveness, readiness, models and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from resnet_serve.api.bulk.store import BulkStore
from resnet_serve.api.dependencies import ClassifierDep, GatewayDep
from resnet_serve.api.pipeline.classifier import Classifier
from resnet_serve.api.pipeline.schemas import (
    ERROR_RESPONSES,
    HealthResponse,
    ModelOut,
    WorkerOut,
)
from resnet_serve.shared.errors import error_body
from resnet_serve.shared.jobs import WorkerInfo
from resnet_serve.shared.logs import request_id_var
from resnet_serve.shared.metrics import Metrics

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
models_router = APIRouter(tags=["classify"])  # one tag: listed once in /docs
# A scrape must answer even when Redis does not: the bulk queue gauge keeps its last value.
BULK_QUEUE_READ_TIMEOUT_S = 1.0


def _models(classifier: Classifier) -> list[ModelOut]:
    return [
        ModelOut(
            name=m.name,
            version=m.version,
            engine=m.engine,
            precision=m.precision,
            input_size=m.input_size,
            weights="random" if m.random_weights else "pretrained",
            top1_agreement=m.top1_agreement,
            top5_containment=m.top5_containment,
            accuracy_gate_passed=m.accuracy_gate_passed,
            top1_drop_pt=m.top1_drop_pt,
            top1_drop_bound_pt=m.top1_drop_bound_pt,
            workers=workers_out(classifier.broker.workers(m.name)),
        )
        for m in classifier.broker.models().values()
    ]


def workers_out(workers: list[WorkerInfo]) -> list[WorkerOut]:
    return [WorkerOut.model_validate(w, from_attributes=True) for w in workers]


@router.get(
    "/healthz",
    response_model=HealthResponse,
    responses={503: ERROR_RESPONSES[503]},
    summary="Liveness",
)
async def healthz(gateway: GatewayDep) -> Response:
    """Live: the process serves HTTP and its model did not fail to load."""
    failure = gateway.startup_failure
    if failure is not None:
        body = error_body("startup_failed", failure, request_id_var.get())
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={503: ERROR_RESPONSES[503]},
    summary="Readiness",
)
async def readyz(classifier: ClassifierDep) -> Response:
    """Ready: standalone, the model is loaded and warm and the batcher runs; distributed,
    Redis answers, the reply dispatcher reads and the queue monitor observes (workers are
    not needed: with none, jobs wait in the queue)."""
    if not classifier.broker.ready():
        # Expected while starting or draining: an answer, not an error. Neither logged
        # as a warning nor counted in errors_total (probes would swamp both).
        exc = classifier.broker.not_ready_error()
        log.debug("readiness probe: %s", exc.message)
        body = error_body(exc.code, exc.message, request_id_var.get())
        return JSONResponse(body, status_code=exc.status, headers=exc.headers())
    return JSONResponse(
        HealthResponse(status="ready", models=_models(classifier)).model_dump(mode="json")
    )


@models_router.get("/v1/models", response_model=list[ModelOut], summary="Models")
async def models(classifier: ClassifierDep) -> list[ModelOut]:
    """The models this service answers for."""
    return _models(classifier)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(gateway: GatewayDep) -> Response:
    """Prometheus text exposition: requests, latency, batching and queue metrics."""
    if gateway.bulk_store is not None:
        await _read_bulk_queue(gateway.bulk_store, gateway.metrics)
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _read_bulk_queue(store: BulkStore, metrics: Metrics) -> None:
    """arq's queue (a sorted set) holds the bulk jobs no jobs-worker has taken yet."""
    try:
        depth = await asyncio.wait_for(
            store.redis.zcard(store.keys.bulk_queue()), BULK_QUEUE_READ_TIMEOUT_S
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.debug("bulk queue depth not read: %s", exc)
        return
    metrics.bulk_queue_depth.set(depth)

"""Liveness, readiness, models and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from resnet_serve.api.v1.classifier import Classifier
from resnet_serve.api.v1.schemas import ERROR_RESPONSES, HealthResponse, ModelOut
from resnet_serve.shared.errors import error_body
from resnet_serve.shared.logs import request_id_var

router = APIRouter(tags=["operations"])


def _models(classifier: Classifier) -> list[ModelOut]:
    return [
        ModelOut(
            name=m.name,
            version=m.version,
            engine=m.engine,
            precision=m.precision,
            input_size=m.input_size,
            top1_agreement=m.top1_agreement,
            top1_lower_bound=m.top1_lower_bound,
            top5_containment=m.top5_containment,
            accuracy_gate_passed=m.accuracy_gate_passed,
        )
        for m in classifier.broker.models().values()
    ]


@router.get(
    "/healthz",
    response_model=HealthResponse,
    responses={503: ERROR_RESPONSES[503]},
    summary="Liveness",
)
async def healthz(request: Request) -> Response:
    """Live: the process serves HTTP and its model did not fail to load."""
    failure = request.app.state.startup_failure
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
async def readyz(request: Request) -> HealthResponse:
    """Ready: standalone, the model is loaded and warm and the batcher runs; distributed,
    Redis is reachable and at least one model has been announced by a worker."""
    classifier: Classifier = request.app.state.classifier
    if not classifier.broker.ready():
        raise classifier.broker.not_ready_error()
    return HealthResponse(status="ready", models=_models(classifier))


@router.get("/v1/models", response_model=list[ModelOut], tags=["classify"], summary="Models")
async def models(request: Request) -> list[ModelOut]:
    """The models this service answers for."""
    return _models(request.app.state.classifier)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition: requests, latency, batching and queue metrics."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )

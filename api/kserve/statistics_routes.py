"""Triton's statistics extension over REST: `GET /v2/models/stats` and
`GET /v2/models/{m}[/versions/{v}]/stats` (api/pipeline/statistics.py says what they
count). Routed before /v2/models/{m}, which would otherwise take `stats` for a name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from resnet_serve.api.dependencies import gateway_of
from resnet_serve.api.kserve.errors import KServeRoute
from resnet_serve.api.kserve.inference import served_model
from resnet_serve.api.kserve.openapi_docs import ERRORS

router = APIRouter(prefix="/v2", tags=["kserve v2"], route_class=KServeRoute)

_STATS_DOC: dict[str, Any] = {
    "responses": {
        200: {
            "description": "Triton's ModelStatisticsResponse as JSON (per gateway)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **{status: ERRORS[status] for status in (404, 503, "4XX")},
    },
}


def statistics(request: Request, name: str | None, version: str | None) -> dict[str, Any]:
    """Every served model's statistics, or `name`'s (404 if it is not served)."""
    classifier = gateway_of(request).classifier
    broker = classifier.broker
    models = [served_model(broker, name, version)] if name else list(broker.models().values())
    return classifier.statistics.report(models)


@router.get("/models/stats", summary="Statistics of every model", **_STATS_DOC)
async def all_statistics(request: Request) -> dict[str, Any]:
    """Per-model request counts and durations, as Triton's statistics extension."""
    return statistics(request, None, None)


ModelName = Annotated[str, Path(description="A served model", examples=["resnet18"])]


@router.get("/models/{model_name}/stats", summary="Model statistics", **_STATS_DOC)
async def model_statistics(request: Request, model_name: ModelName) -> dict[str, Any]:
    """Success and failure counts, queue, decode and inference durations of the model's
    KServe v2 requests (REST and gRPC) answered by this gateway."""
    return statistics(request, model_name, None)


@router.get(
    "/models/{model_name}/versions/{version}/stats",
    summary="Model version statistics",
    **_STATS_DOC,
)
async def model_version_statistics(
    request: Request, model_name: ModelName, version: Annotated[str, Path()]
) -> dict[str, Any]:
    """The statistics of one version of the model."""
    return statistics(request, model_name, version)

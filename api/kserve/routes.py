"""KServe v2 / Open Inference Protocol REST routes under /v2.

Errors answer the protocol's `{"error": "<message>"}`: 400 for a request that does not
fit the model, 404 for an unknown model or version, 413 past a size limit, 503 (with
Retry-After) when overloaded or not ready, 504 past the deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Match

from resnet_serve.api.dependencies import gateway_of
from resnet_serve.api.health import workers_out
from resnet_serve.api.kserve import inference
from resnet_serve.api.kserve.codec import BinaryData, encode_response, inflate, split
from resnet_serve.api.kserve.errors import KServeRoute, error_response
from resnet_serve.api.kserve.model_config import model_config
from resnet_serve.api.kserve.openapi_docs import ERRORS, INFER_DOC, INFER_RESPONSES
from resnet_serve.api.kserve.parsing import ParseLimits, check_elements
from resnet_serve.api.kserve.schemas import (
    HEADER_LENGTH,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from resnet_serve.api.kserve.tensors import count
from resnet_serve.api.pipeline.classifier import Classifier
from resnet_serve.api.pipeline.uploads import BodyLimits, read_body
from resnet_serve.shared.errors import NotFound, NotReady
from resnet_serve.shared.jobs import ModelInfo

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "classification"]
router = APIRouter(prefix="/v2", tags=["kserve v2"], route_class=KServeRoute)

ModelName = Annotated[str, Path(description="A served model", examples=["resnet18"])]
Version = Annotated[str, Path(description="The model's version", examples=["1"])]


def _classifier(request: Request) -> Classifier:
    return gateway_of(request).classifier


def _model(request: Request, name: str, version: str | None) -> ModelInfo:
    return inference.served_model(_classifier(request).broker, name, version)


@router.get("/", include_in_schema=False)
@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    """The server's name, version and the protocol extensions it supports."""
    return ServerMetadata(name="resnet-serve", version=request.app.version, extensions=EXTENSIONS)


@router.get(
    "/health/live", response_model=ServerLive, responses={503: ERRORS[503]}, summary="Server live"
)
async def server_live(request: Request) -> ServerLive:
    """200 while the process serves HTTP and its model did not fail to load."""
    failure = gateway_of(request).startup_failure
    if failure is not None:
        raise NotReady(f"startup failed: {failure}")
    return ServerLive(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReady,
    responses={503: ERRORS[503]},
    summary="Server ready",
)
async def server_ready(request: Request) -> ServerReady:
    """200 when every model is loaded, warm and taking requests."""
    broker = _classifier(request).broker
    if not broker.ready():
        raise broker.not_ready_error()
    return ServerReady(ready=True)


def _ready(request: Request, name: str, version: str | None) -> Response:
    """200 and ready while a live worker serves the model; 503 and not ready otherwise
    (Triton's clients read any other status as not ready)."""
    info = _model(request, name, version)
    broker = _classifier(request).broker
    if not broker.ready():
        raise broker.not_ready_error()
    ready = bool(broker.workers(info.name))
    body = ModelReady(name=info.name, ready=ready).model_dump()
    return JSONResponse(body, status_code=200 if ready else 503)


def _metadata(request: Request, name: str, version: str | None) -> ModelMetadata:
    info = _model(request, name, version)
    workers = workers_out(_classifier(request).broker.workers(info.name))
    return inference.metadata(info).model_copy(update={"workers": workers})


_MODEL_ERRORS = {status: ERRORS[status] for status in (404, 503, "4XX")}
_METADATA: dict[str, Any] = {"response_model": ModelMetadata, "responses": _MODEL_ERRORS}
_READY: dict[str, Any] = {"response_model": ModelReady, "responses": _MODEL_ERRORS}


@router.get("/models/{model_name}", summary="Model metadata", **_METADATA)
async def model_metadata(request: Request, model_name: ModelName) -> ModelMetadata:
    """The model's input and output tensors: names, datatypes and shapes."""
    return _metadata(request, model_name, None)


@router.get(
    "/models/{model_name}/versions/{version}", summary="Model version metadata", **_METADATA
)
async def model_version_metadata(
    request: Request, model_name: ModelName, version: Version
) -> ModelMetadata:
    """The metadata of one version of the model."""
    return _metadata(request, model_name, version)


@router.get("/models/{model_name}/ready", summary="Model ready", **_READY)
async def model_ready(request: Request, model_name: ModelName) -> Response:
    """200 when the model is ready for inference; 503 while it loads."""
    return _ready(request, model_name, None)


@router.get(
    "/models/{model_name}/versions/{version}/ready", summary="Model version ready", **_READY
)
async def model_version_ready(
    request: Request, model_name: ModelName, version: Version
) -> Response:
    """200 when this version of the model is ready for inference."""
    return _ready(request, model_name, version)


def _config(request: Request, name: str, version: str | None) -> dict[str, Any]:
    settings = _classifier(request).settings
    info = _model(request, name, version)
    return model_config(info, settings.max_batch, settings.max_batch_wait_ms)


_CONFIG_DOC: dict[str, Any] = {
    "responses": {
        200: {
            "description": "Triton's model configuration (model_config.proto as JSON)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **_MODEL_ERRORS,
    },
}


@router.get("/models/{model_name}/config", summary="Model configuration", **_CONFIG_DOC)
async def model_configuration(request: Request, model_name: ModelName) -> dict[str, Any]:
    """Triton's model configuration: platform, max_batch_size, inputs and outputs with
    `dims` that leave out the batch dimension, and the dynamic batcher's queue delay.
    Distributed gateways answer with their own `max_batch` and `max_batch_wait_ms`."""
    return _config(request, model_name, None)


@router.get(
    "/models/{model_name}/versions/{version}/config",
    summary="Model version configuration",
    **_CONFIG_DOC,
)
async def model_version_configuration(
    request: Request, model_name: ModelName, version: Version
) -> dict[str, Any]:
    """The configuration of one version of the model."""
    return _config(request, model_name, version)


async def _infer(request: Request, model_name: str, version: str | None) -> Response:
    classifier = _classifier(request)
    info = classifier.model(_model(request, model_name, version).name)  # 503 until ready
    settings = classifier.settings
    limits = ParseLimits(info.input_size, settings.max_files_per_request, settings.max_upload_bytes)
    async with gateway_of(request).body_limits() as body_budget:
        header, binary, parse_cost, kept = await _read(
            request, settings.max_request_bytes, body_budget, limits
        )
        # Parsing charges what it holds while it runs (413 if it never fits).
        parsed = await gateway_of(request).kserve_parser.parse(header, limits, parse_cost)
        # From here on this request holds the body under its binary data (if any) and
        # the parsed tensors (never more than the header's text): charged for that only.
        body_budget.grant.shrink_to(kept + len(header))
        del header
        state = request.scope["state"]
        deadline = state["received_at"] + settings.request_timeout_s
        # Triton's `timeout` parameter: the microseconds this client is willing to wait.
        timeout_us = count(parsed.request.parameters, "timeout", "request")
        if timeout_us is not None:
            deadline = min(deadline, state["received_at"] + timeout_us / 1e6)
        answer, blobs = await inference.run(
            classifier,
            info,
            parsed,
            BinaryData(binary),
            state["request_id"],
            state["received_at"],
            deadline,
        )
    content, json_length = encode_response(answer, blobs)
    if json_length is None:
        return Response(content, media_type="application/json")
    headers = {HEADER_LENGTH: str(json_length)}
    return Response(content, media_type="application/octet-stream", headers=headers)


async def _read(
    request: Request, limit: int, body_budget: BodyLimits, limits: ParseLimits
) -> tuple[bytes, memoryview, int, int]:
    """(JSON header, binary data, bytes parsing will hold, bytes the binary data keeps
    alive): the body read within its limits, inflated and its header's elements counted
    in a thread (zlib lets go of the GIL)."""
    body = await read_body(request, limit, body_budget)
    encoding = request.headers.get("content-encoding")
    # The inflated body is held beside the compressed one (the join: twice, briefly).
    body = await inflate(body, encoding, limit, limits.max_elements, body_budget.grant)
    header, binary = split(body, request.headers.get(HEADER_LENGTH))
    parse_cost = await asyncio.to_thread(check_elements, header, limits)
    kept = len(body) if binary.nbytes else 0  # the view keeps the whole body
    return bytes(header), binary, parse_cost, kept


_INFER: dict[str, Any] = {
    "response_model": InferenceResponse,
    "responses": INFER_RESPONSES,
    "openapi_extra": INFER_DOC,
}


@router.post("/models/{model_name}/infer", summary="Inference", **_INFER)
async def infer(request: Request, model_name: ModelName) -> Response:
    """Classify images: `images` (BYTES, encoded files: base64 strings in JSON, or raw
    through the binary extension) or `pixels` (UINT8 [N, S, S, 3], already resized and
    cropped). The `probabilities` output is FP32 [N, classes], or with
    `"parameters": {"classification": k}` BYTES [N, k] strings "score:index:label"."""
    return await _infer(request, model_name, None)


@router.post(
    "/models/{model_name}/versions/{version}/infer", summary="Inference on a version", **_INFER
)
async def infer_version(request: Request, model_name: ModelName, version: Version) -> Response:
    """Inference on one version of the model (see the unversioned route)."""
    return await _infer(request, model_name, version)


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
    include_in_schema=False,
)
async def not_found(request: Request, path: str) -> Response:
    """Anything else under /v2 answers in the protocol's error format too."""
    allowed = sorted(
        method
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint is not not_found
        if route.matches(request.scope)[0] is Match.PARTIAL
        for method in route.methods or ()
    )
    if allowed:
        message = f"{request.method} is not allowed here"
        allow = {"Allow": ", ".join(allowed)}
        return error_response(request, 405, "method_not_allowed", message, allow)
    raise NotFound(f"no such endpoint: /v2/{path}")

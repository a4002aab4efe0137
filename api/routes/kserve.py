"""KServe v2 / Open Inference Protocol REST routes under /v2.

Errors answer the protocol's `{"error": "<message>"}`: 400 for a request that does not
fit the model, 404 for an unknown model or version, 413 past a size limit, 503 (with
Retry-After) when overloaded or not ready, 504 past the deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.routing import Match

from api import kserve_inference as inference
from api.kserve_codec import (
    HEADER_LENGTH,
    BinaryData,
    decompress,
    encode_response,
    read_body,
    split,
)
from api.kserve_schemas import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    inline_schema,
)
from api.service import Classifier
from shared.errors import InvalidTensor, NotFound, NotReady, ServeError, UnknownModel
from shared.jobs import ModelInfo

EXTENSIONS = ["binary_tensor_data", "classification"]
# Statuses the protocol's clients act on as they are; any other client error is a 400.
_KEPT_STATUSES = {404, 405, 413, 503, 504}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if 400 <= status < 500 and status not in _KEPT_STATUSES:
        status = 400
    return JSONResponse({"error": message}, status, headers=headers)


def _validation_message(exc: RequestValidationError | ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "header"))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


class KServeRoute(APIRoute):
    """Turns the gateway's errors into the protocol's error body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServeError as exc:
                return error_response(exc.status, exc.message, exc.headers())
            except RequestValidationError as exc:
                return error_response(400, _validation_message(exc))

        return handle


router = APIRouter(prefix="/v2", tags=["kserve v2"], route_class=KServeRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "The request does not fit the model: input name, datatype, shape or data",
        404: "Unknown model or version",
        413: "Request body, image or batch too large",
        503: "Queue full or not ready (see Retry-After)",
        504: "Deadline exceeded",
    }.items()
}


def _classifier(request: Request) -> Classifier:
    classifier: Classifier = request.app.state.classifier
    return classifier


def _model(request: Request, name: str, version: str | None) -> ModelInfo:
    """The served model `name` (and `version`), whether or not it is ready yet."""
    broker = _classifier(request).broker
    info = broker.models().get(name)
    if info is None:
        if not broker.ready():
            raise NotReady("the models are still loading", retry_after_s=1)
        served = ", ".join(broker.models())
        raise UnknownModel(f"model {name!r} is not served here (served: {served})")
    if version is not None and version != info.version:
        raise UnknownModel(f"model {name!r} has no version {version!r} (served: {info.version})")
    return info


@router.get("/", include_in_schema=False)
@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    """The server's name, version and the protocol extensions it supports."""
    return ServerMetadata(name="resnet-serve", version=request.app.version, extensions=EXTENSIONS)


@router.get("/health/live", response_model=ServerLive, responses={503: _ERRORS[503]})
async def server_live(request: Request) -> ServerLive:
    """200 while the process serves HTTP and its model did not fail to load."""
    failure = request.app.state.startup_failure
    if failure is not None:
        raise NotReady(f"startup failed: {failure}")
    return ServerLive(live=True)


@router.get("/health/ready", response_model=ServerReady, responses={503: _ERRORS[503]})
async def server_ready(request: Request) -> ServerReady:
    """200 when every model is loaded, warm and taking requests."""
    if not _classifier(request).broker.ready():
        raise NotReady("not ready: loading, warming, draining or failed", retry_after_s=1)
    return ServerReady(ready=True)


def _metadata(request: Request, name: str, version: str | None) -> ModelMetadata:
    return inference.metadata(_model(request, name, version))


def _ready(request: Request, name: str, version: str | None) -> ModelReady:
    info = _model(request, name, version)
    if not _classifier(request).broker.ready():
        raise NotReady(f"model {info.name!r} is not ready", retry_after_s=1)
    return ModelReady(name=info.name, ready=True)


_METADATA: dict[str, Any] = {"response_model": ModelMetadata, "responses": {404: _ERRORS[404]}}
_READY: dict[str, Any] = {
    "response_model": ModelReady,
    "responses": {404: _ERRORS[404], 503: _ERRORS[503]},
}


@router.get("/models/{model_name}", summary="Model metadata", **_METADATA)
async def model_metadata(request: Request, model_name: str) -> ModelMetadata:
    """The model's input and output tensors: names, datatypes and shapes."""
    return _metadata(request, model_name, None)


@router.get(
    "/models/{model_name}/versions/{version}", summary="Model version metadata", **_METADATA
)
async def model_version_metadata(request: Request, model_name: str, version: str) -> ModelMetadata:
    """The metadata of one version of the model."""
    return _metadata(request, model_name, version)


@router.get("/models/{model_name}/ready", summary="Model ready", **_READY)
async def model_ready(request: Request, model_name: str) -> ModelReady:
    """200 when the model is ready for inference; 503 while it loads."""
    return _ready(request, model_name, None)


@router.get(
    "/models/{model_name}/versions/{version}/ready", summary="Model version ready", **_READY
)
async def model_version_ready(request: Request, model_name: str, version: str) -> ModelReady:
    """200 when this version of the model is ready for inference."""
    return _ready(request, model_name, version)


HeaderLength = Annotated[
    int | None,
    Header(
        alias=HEADER_LENGTH,
        ge=0,
        description="Binary tensor data extension: the size of the JSON header; the "
        "binary tensor data follows it",
    ),
]
ContentEncoding = Annotated[
    str | None,
    Header(alias="Content-Encoding", description="gzip or deflate compress the request body"),
]


async def _infer(
    request: Request,
    model_name: str,
    version: str | None,
    header_length: int | None,
    content_encoding: str | None,
) -> Response:
    classifier = _classifier(request)
    info = classifier.model(_model(request, model_name, version).name)  # 503 until ready
    settings = classifier.settings
    limit = settings.max_request_bytes
    body = await read_body(request.stream(), request.headers.get("content-length"), limit)
    header, binary = split(decompress(body, content_encoding, limit), header_length)
    try:
        parsed = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidTensor(f"invalid inference request: {_validation_message(exc)}") from exc
    outputs = inference.output_requests(parsed, info)
    images = await inference.input_images(parsed, BinaryData(binary), classifier, info)
    state = request.scope["state"]
    deadline = state["received_at"] + settings.request_timeout_s
    timeout_us = inference.timeout_us(parsed)
    if timeout_us is not None:
        deadline = min(deadline, state["received_at"] + timeout_us / 1e6)
    results = await inference.infer(
        classifier, info, images, outputs, state["request_id"], deadline
    )
    entries, blobs = inference.response_outputs(outputs, results)
    answer: dict[str, Any] = {"model_name": info.name, "model_version": info.version}
    if parsed.id is not None:
        answer["id"] = parsed.id
    answer["outputs"] = entries
    content, json_length = encode_response(answer, blobs)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(json_length)},
    )


_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(InferenceRequest)},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "The JSON header, then binary tensor data "
                f"({HEADER_LENGTH} gives the header's size)",
            },
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with binary outputs the JSON header then the tensor bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            HEADER_LENGTH: {
                "description": "Size of the JSON header when binary outputs follow it",
                "schema": {"type": "integer"},
            }
        },
    },
    **_ERRORS,
}

_INFER: dict[str, Any] = {
    "response_model": InferenceResponse,
    "responses": _INFER_RESPONSES,
    "openapi_extra": _INFER_DOC,
}


@router.post("/models/{model_name}/infer", summary="Inference", **_INFER)
async def infer(
    request: Request,
    model_name: str,
    header_length: HeaderLength = None,
    content_encoding: ContentEncoding = None,
) -> Response:
    """Classify images: `images` (BYTES, encoded files: base64 strings in JSON, or raw
    through the binary extension) or `pixels` (UINT8 [N, S, S, 3], already resized and
    cropped). The `probabilities` output is FP32 [N, classes], or with
    `"parameters": {"classification": k}` BYTES [N, k] strings "score:index:label"."""
    return await _infer(request, model_name, None, header_length, content_encoding)


@router.post(
    "/models/{model_name}/versions/{version}/infer", summary="Inference on a version", **_INFER
)
async def infer_version(
    request: Request,
    model_name: str,
    version: str,
    header_length: HeaderLength = None,
    content_encoding: ContentEncoding = None,
) -> Response:
    """Inference on one version of the model (see the unversioned route)."""
    return await _infer(request, model_name, version, header_length, content_encoding)


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
        return error_response(
            405, f"{request.method} is not allowed here", {"Allow": ", ".join(allowed)}
        )
    raise NotFound(f"no such endpoint: /v2/{path}")

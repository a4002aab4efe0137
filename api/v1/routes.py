"""POST /v1/classify and /v1/classify/batch."""

from __future__ import annotations

from fastapi import APIRouter, Request

from resnet_serve.api.dependencies import GatewayDep
from resnet_serve.api.pipeline.classifier import Classifier
from resnet_serve.api.pipeline.params import MAX_TOP_K, ModelName, TopK
from resnet_serve.api.pipeline.schemas import ERROR_RESPONSES, BatchResponse, ClassifyResponse
from resnet_serve.api.pipeline.uploads import MULTIPART_OVERHEAD_BYTES, read_uploads
from resnet_serve.shared.errors import InvalidParameter
from resnet_serve.shared.jobs import ModelInfo

router = APIRouter(prefix="/v1", tags=["classify"])


def _body_doc(multiple: bool) -> dict[str, object]:
    file_schema = {"type": "string", "format": "binary"}
    files = {"type": "array", "items": file_schema} if multiple else file_schema
    properties = {
        "file": files,
        "model": {"type": "string", "description": "As the `model` query parameter"},
        "top_k": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_TOP_K,
            "description": "As the `top_k` query parameter (the query wins when both are sent)",
        },
    }
    content: dict[str, object] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": properties, "required": ["file"]}
        }
    }
    if not multiple:
        content["image/*"] = {"schema": file_schema}
    return {"requestBody": {"required": True, "content": content}}


def _early_check(classifier: Classifier, model: str | None) -> None:
    """503 while loading, 404 for a query's unknown model: before the body is read."""
    if model:
        classifier.model(model)
    else:
        classifier.check_ready()


def _from_form(
    request: Request,
    classifier: Classifier,
    fields: dict[str, str],
    model: str | None,
    top_k: int,
) -> tuple[ModelInfo, int]:
    """`model` and `top_k` from the query, else from multipart fields, else defaults."""
    if model is None:
        model = fields.get("model") or None
    if "top_k" in fields:  # checked even when the query's value wins
        text = fields["top_k"].strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_TOP_K:
            raise InvalidParameter(f"top_k: must be a whole number from 1 to {MAX_TOP_K}")
        if "top_k" not in request.query_params:
            top_k = int(text)
    return classifier.model(model), top_k


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(multiple=False),
    summary="Classify one image",
)
async def classify(
    request: Request, gateway: GatewayDep, top_k: TopK = 3, model: ModelName = None
) -> ClassifyResponse:
    """Upload an image as multipart field `file` or as a raw `image/*` body; get the
    top-k ImageNet labels. A multipart body may also carry `model` and `top_k` fields."""
    classifier = gateway.classifier
    _early_check(classifier, model)
    settings = classifier.settings
    state = request.scope["state"]
    fields: dict[str, str] = {}
    async with gateway.body_limits() as limits:
        # The body is read first: its bytes arrive and are parsed by the HTTP server
        # whether or not they are used, and a queue place is then held only while the
        # image decodes, never while a slow client sends it.
        (upload,) = await read_uploads(
            request,
            max_files=1,
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
            limits=limits,
            fields=fields,
        )
        info, top_k = _from_form(request, classifier, fields, model, top_k)
        return await classifier.classify(
            upload, info, top_k, state["request_id"], state["received_at"]
        )


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(multiple=True),
    summary="Classify several images in one request",
)
async def classify_batch(
    request: Request, gateway: GatewayDep, top_k: TopK = 3, model: ModelName = None
) -> BatchResponse:
    """Several multipart `file` fields; one result (or one error) per file, in order.
    `model` and `top_k` may also come as multipart fields."""
    classifier = gateway.classifier
    _early_check(classifier, model)
    settings = classifier.settings
    fields: dict[str, str] = {}
    async with gateway.body_limits() as limits:
        uploads = await read_uploads(
            request,
            max_files=settings.max_files_per_request,
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_request_bytes,
            limits=limits,
            fields=fields,
        )
        info, top_k = _from_form(request, classifier, fields, model, top_k)
        state = request.scope["state"]
        items = await classifier.classify_many(
            uploads, info, top_k, state["request_id"], state["received_at"]
        )
    return BatchResponse(request_id=state["request_id"], results=items)

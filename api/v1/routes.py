"""POST /v1/classify and /v1/classify/batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from resnet_serve.api.v1.classifier import Classifier
from resnet_serve.api.v1.schemas import ERROR_RESPONSES, BatchResponse, ClassifyResponse
from resnet_serve.api.v1.uploads import body_limits, read_uploads

router = APIRouter(prefix="/v1", tags=["classify"])

TopK = Annotated[int, Query(ge=1, le=20, description="How many labels to return")]
ModelName = Annotated[str | None, Query(description="Model to use; the default model if unset")]


def _body_doc(multiple: bool) -> dict[str, object]:
    file_schema = {"type": "string", "format": "binary"}
    files = {"type": "array", "items": file_schema} if multiple else file_schema
    content: dict[str, object] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": files}, "required": ["file"]}
        }
    }
    if not multiple:
        content["image/*"] = {"schema": file_schema}
    return {"requestBody": {"required": True, "content": content}}


def _classifier(request: Request) -> Classifier:
    classifier: Classifier = request.app.state.classifier
    return classifier


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(multiple=False),
    summary="Classify one image",
)
async def classify(request: Request, top_k: TopK = 3, model: ModelName = None) -> ClassifyResponse:
    """Upload an image as multipart field `file` or as a raw `image/*` body; get the
    top-k ImageNet labels."""
    classifier = _classifier(request)
    info = classifier.model(model)
    settings = classifier.settings
    state = request.scope["state"]
    async with body_limits(request) as limits:
        # The body is read first: its bytes arrive and are parsed by the HTTP server
        # whether or not they are used, and a queue place is then held only while the
        # image decodes, never while a slow client sends it.
        (upload,) = await read_uploads(
            request,
            max_files=1,
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_upload_bytes + 64 * 1024,
            limits=limits,
        )
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
    request: Request, top_k: TopK = 3, model: ModelName = None
) -> BatchResponse:
    """Several multipart `file` fields; one result (or one error) per file, in order."""
    classifier = _classifier(request)
    info = classifier.model(model)
    settings = classifier.settings
    async with body_limits(request) as limits:
        uploads = await read_uploads(
            request,
            max_files=settings.max_files_per_request,
            max_file_bytes=settings.max_upload_bytes,
            max_request_bytes=settings.max_request_bytes,
            limits=limits,
        )
        state = request.scope["state"]
        items = await classifier.classify_many(
            uploads, info, top_k, state["request_id"], state["received_at"]
        )
    return BatchResponse(request_id=state["request_id"], results=items)

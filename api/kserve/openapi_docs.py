"""What the OpenAPI document says about /v2 beyond its models: the error responses, and
the infer body, which is read by hand (JSON, optionally followed by binary tensor data)
and so documented explicitly."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from resnet_serve.api.kserve.schemas import HEADER_LENGTH, InferenceRequest, KServeErrorResponse


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` substituted in place: a request body given
    through `openapi_extra` is not added to the document's components by FastAPI."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_ERROR_DESCRIPTIONS: dict[int | str, str] = {
    400: "The request does not fit the model: input name, datatype, shape or data",
    404: "Unknown model or version",
    413: "Request body, image or batch too large",
    503: "Queue full or not ready (see Retry-After)",
    504: "Deadline exceeded",
    # Also stops FastAPI documenting its own 422 body: /v2 answers every error this way.
    "4XX": "Any other client error",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": KServeErrorResponse, "description": description}
    for status, description in _ERROR_DESCRIPTIONS.items()
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}

INFER_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "Binary tensor data extension: the size of the JSON header that "
            "starts the body; the binary tensor data follows it",
            "schema": {"type": "integer", "minimum": 0},
        },
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "description": "The request body may be compressed",
            "schema": {"type": "string", "enum": ["identity", "gzip", "deflate"]},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": inline_schema(InferenceRequest)},
            "application/octet-stream": {
                **_BINARY,
                "description": f"The JSON header, then binary tensor data ({HEADER_LENGTH})",
            },
        },
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON; with binary outputs, the JSON header then the tensor bytes",
        "content": {"application/octet-stream": _BINARY},
        "headers": {
            HEADER_LENGTH: {
                "description": "Size of the JSON header when binary outputs follow it",
                "schema": {"type": "integer"},
            }
        },
    },
    **ERRORS,
}

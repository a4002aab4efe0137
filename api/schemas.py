"""Response bodies, documented in OpenAPI with examples."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PredictionOut(BaseModel):
    index: int = Field(description="ImageNet class index", examples=[285])
    label: str = Field(examples=["Egyptian cat"])
    score: float = Field(description="Softmax probability", examples=[0.71])


class TimingsOut(BaseModel):
    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f2a9c1e5b7d4e0f8a6b2c4d1e3f5a7b",
                    "model": "resnet18",
                    "version": "1",
                    "predictions": [
                        {"index": 285, "label": "Egyptian cat", "score": 0.71},
                        {"index": 281, "label": "tabby", "score": 0.17},
                        {"index": 282, "label": "tiger cat", "score": 0.09},
                    ],
                    "timings": {
                        "decode_ms": 1.8,
                        "queue_ms": 2.1,
                        "inference_ms": 19.5,
                        "total_ms": 24.0,
                    },
                    "batch_size": 4,
                    "cached": False,
                }
            ]
        }
    )

    request_id: str
    model: str
    version: str
    predictions: list[PredictionOut]
    timings: TimingsOut
    batch_size: int = Field(description="Images in the engine call that served this one")
    cached: bool = Field(description="Served from the response cache")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_an_image"])
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    filename: str
    result: ClassifyResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    request_id: str
    results: list[BatchItem]


class ModelOut(BaseModel):
    name: str
    version: str
    engine: str
    precision: str
    input_size: int


class HealthResponse(BaseModel):
    status: str
    models: list[ModelOut] = []


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Empty body",
        404: "Unknown model",
        413: "Upload too large or too many pixels",
        415: "Not an image, or wrong content type",
        422: "Corrupt image or invalid parameter",
        503: "Queue full or not ready (see Retry-After)",
        504: "Deadline exceeded",
    }.items()
}

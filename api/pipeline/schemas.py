"""Response bodies, documented in OpenAPI with examples."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PredictionOut(BaseModel):
    index: int = Field(description="ImageNet class index", examples=[285])
    label: str = Field(examples=["Egyptian cat"])
    score: float = Field(description="Softmax probability", examples=[0.71])


class TimingsOut(BaseModel):
    decode_ms: float = Field(description="Decode, resize and crop", examples=[1.8])
    queue_ms: float = Field(description="Waiting for a batch", examples=[2.1])
    inference_ms: float = Field(description="The engine call of the batch", examples=[19.5])
    total_ms: float = Field(description="Received to answered", examples=[24.0])


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
                    "weights": "pretrained",
                }
            ]
        }
    )

    request_id: str
    model: str
    version: str
    predictions: list[PredictionOut]
    timings: TimingsOut
    batch_size: int = Field(
        description="Images in the engine call that computed this answer (for a cached "
        "answer, the call that computed it first)"
    )
    cached: bool = Field(
        description="Served from the response cache: this request spent no time queued or "
        "in the engine, so `timings.queue_ms` and `timings.inference_ms` are 0"
    )
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        examples=["pretrained"],
        description="`random`: the model was built from random weights (plumbing and "
        "benchmarks); these predictions are meaningless",
    )


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code", examples=["not_an_image"])
    message: str = Field(examples=["the upload is not an image in a supported format"])
    request_id: str | None = Field(examples=["3f2a9c1e5b7d4e0f8a6b2c4d1e3f5a7b"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    filename: str = Field(examples=["cat.jpg"])
    result: ClassifyResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    request_id: str = Field(examples=["3f2a9c1e5b7d4e0f8a6b2c4d1e3f5a7b"])
    results: list[BatchItem] = Field(description="One per uploaded file, in order")


class WorkerOut(BaseModel):
    """One live worker of a model, as it announces itself."""

    worker_id: str = Field(examples=["gpu-node-3-4711"])
    version: str = Field(examples=["1"])
    engine: str = Field(examples=["openvino"])
    precision: str = Field(examples=["int8"])
    images_per_s: float = Field(description="Its measured throughput", examples=[180.5])
    cpu: str = Field("", description="Its CPU's model name", examples=["AMD EPYC"])


class ModelOut(BaseModel):
    name: str = Field(examples=["resnet18"])
    version: str = Field(examples=["1"])
    engine: str = Field(examples=["onnxruntime"])
    precision: str = Field(examples=["fp32"])
    input_size: int = Field(description="Side of the square crop the model takes", examples=[224])
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        examples=["pretrained"],
        description="`random`: built from random weights for plumbing and benchmarks; "
        "its predictions are meaningless",
    )
    top1_agreement: float | None = Field(
        None,
        description="Reduced precision: top-1 agreement with fp32 on held-out crops "
        "(flips between near-tied classes included; the gate judges top1_drop_bound_pt)",
    )
    top5_containment: float | None = Field(
        None,
        description="Reduced precision: share of held-out crops whose fp32 top-1 is in its top 5",
    )
    accuracy_gate_passed: bool | None = Field(
        None, description="Reduced precision: whether its recorded accuracy gate passed"
    )
    top1_drop_pt: float | None = Field(
        None,
        description="Reduced precision: top-1 accuracy lost against fp32, in points "
        "(estimated under fp32's probabilities, or measured on labelled photos)",
        examples=[0.2],
    )
    top1_drop_bound_pt: float | None = Field(
        None,
        description="One-sided 95% upper bound of top1_drop_pt, bootstrapped by photo; "
        "the gate passes when it is at most max_accuracy_drop_pt",
        examples=[0.31],
    )
    workers: list[WorkerOut] = Field(
        default_factory=list,
        description="Its live workers (distributed: each worker as its heartbeat says; "
        "standalone: this process). None: requests get 503 no_workers",
    )


class HealthResponse(BaseModel):
    status: str = Field(examples=["ready"])
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

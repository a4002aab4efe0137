"""KServe v2 (Open Inference Protocol) bodies, as the REST specification names them.

https://github.com/kserve/open-inference-protocol (inference_rest.md), with Triton's
binary tensor data and classification extensions.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from resnet_serve.api.pipeline.schemas import WorkerOut

HEADER_LENGTH = "Inference-Header-Content-Length"

# The specification allows string, number or boolean values; bool comes first so that
# JSON `true` stays a bool and `1` stays an int (pydantic's smart union picks exact types).
Parameters = dict[str, bool | int | float | str]
Shape = list[Annotated[int, Field(ge=0)]]

_BASE64_EXAMPLE = "/9j/4AAQSkZJRgABAQ...(a whole JPEG file, base64)"
_SCALAR: dict[str, Any] = {"type": ["number", "string", "boolean"]}
# Documented two levels deep; validated as any JSON array (a UINT8 tensor has 150,528
# elements per image: numpy checks them faster than a per-element union would).
TensorData = Annotated[
    list[Any],
    WithJsonSchema(
        {"type": "array", "items": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]}}
    ),
]


class ServerMetadata(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "resnet-serve",
                    "version": "0.1.0",
                    "extensions": ["binary_tensor_data", "classification"],
                }
            ]
        }
    )

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str = Field(examples=["images"])
    datatype: str = Field(examples=["BYTES"])
    shape: list[int] = Field(description="-1 marks a variable dimension", examples=[[-1]])


class ModelMetadata(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "resnet18",
                    "versions": ["1"],
                    "platform": "onnxruntime_onnx",
                    "inputs": [
                        {"name": "images", "datatype": "BYTES", "shape": [-1]},
                        {"name": "pixels", "datatype": "UINT8", "shape": [-1, 224, 224, 3]},
                    ],
                    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]}],
                }
            ]
        }
    )

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    # Additions to the KServe v2 body (clients ignore fields they do not know).
    precision: str | None = Field(None, examples=["int8"])
    top1_agreement: float | None = Field(
        None, description="Reduced precision: top-1 agreement with fp32 on held-out crops"
    )
    top5_containment: float | None = None
    accuracy_gate_passed: bool | None = None
    top1_drop_pt: float | None = Field(
        None, description="Reduced precision: top-1 accuracy lost against fp32, in points"
    )
    top1_drop_bound_pt: float | None = Field(
        None, description="Its one-sided 95% upper bound (bootstrapped by photo)"
    )
    workers: list[WorkerOut] = Field(default_factory=list, description="Its live workers")


class ServerLive(BaseModel):
    live: bool = Field(examples=[True])


class ServerReady(BaseModel):
    ready: bool = Field(examples=[True])


class ModelReady(BaseModel):
    name: str = Field(examples=["resnet18"])
    ready: bool = Field(examples=[True])


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    # Documented as the names this server knows; checked by hand, with a message that
    # says what the model takes.
    name: str = Field(examples=["images"], json_schema_extra={"enum": ["images", "pixels"]})
    shape: Shape = Field(examples=[[1]])
    datatype: str = Field(examples=["BYTES"], json_schema_extra={"enum": ["BYTES", "UINT8"]})
    parameters: Parameters = Field(
        default_factory=dict,
        description="`binary_data_size`: this tensor's bytes follow the JSON header",
    )
    data: TensorData | None = Field(
        None,
        description="Row-major elements, flat or nested (any depth). BYTES elements are "
        "base64 strings. Absent when the tensor travels as binary data.",
        examples=[[_BASE64_EXAMPLE]],
    )


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(examples=["probabilities"], json_schema_extra={"enum": ["probabilities"]})
    parameters: Parameters = Field(
        default_factory=dict,
        description="`classification`: k for top-k 'score:index:label' strings; "
        "`binary_data`: true for binary tensor data",
        examples=[{"classification": 3}],
    )


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {
                            "name": "images",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": [_BASE64_EXAMPLE],
                        }
                    ],
                    "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
                }
            ]
        },
    )

    id: str | None = None
    parameters: Parameters = Field(
        default_factory=dict,
        description="`binary_data_output`: all outputs as binary data; "
        "`timeout`: microseconds, shortens the server's deadline",
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str = Field(examples=["probabilities"])
    shape: list[int] = Field(examples=[[1, 1000]])
    datatype: str = Field(examples=["FP32"])
    parameters: Parameters | None = Field(
        None,
        description="`binary_data_size` when the output travels as binary data",
        examples=[{"binary_data_size": 4000}],
    )
    data: list[float | str] | None = Field(
        None,
        description="Absent when the output travels as binary data",
        examples=[["0.71:285:Egyptian cat"]],
    )


class InferenceResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "resnet18",
                    "model_version": "1",
                    "id": "42",
                    "outputs": [
                        {
                            "name": "probabilities",
                            "shape": [1, 3],
                            "datatype": "BYTES",
                            "data": [
                                "0.71:285:Egyptian cat",
                                "0.17:281:tabby",
                                "0.09:282:tiger cat",
                            ],
                        }
                    ],
                }
            ]
        }
    )

    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class KServeErrorResponse(BaseModel):
    """The protocol's error body: one descriptive string."""

    # A name of its own: two `ErrorResponse` models made OpenAPI name both after their
    # module paths, which then changed with every move.
    model_config = ConfigDict(
        title="ErrorResponse",
        json_schema_extra={"examples": [{"error": "model 'resnet50' is not served here"}]},
    )

    error: str

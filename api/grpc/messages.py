"""Protocol messages to and from the gateway pipeline's KServe v2 forms, so a gRPC call
is validated, admitted, decoded and answered by the same code as a REST one.

- `raw_input_contents` (what tritonclient sends) is the REST binary extension's data:
  BYTES elements length-prefixed, UINT8 tensors as raw bytes; each input gets its
  `binary_data_size`.
- Typed contents: `bytes_contents` for `images` (one encoded file per element),
  `uint_contents` for `pixels`.
- Outputs are always answered in `raw_output_contents`, as Triton does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import json_format
from pydantic import ValidationError

from resnet_serve.api.grpc.protocol import model_config, pb
from resnet_serve.api.kserve.codec import BinaryData
from resnet_serve.api.kserve.parsing import Parsed, validation_message
from resnet_serve.api.kserve.schemas import InferenceRequest, ModelMetadata
from resnet_serve.api.kserve.tensors import IMAGES, PIXELS, Converted
from resnet_serve.shared.errors import InvalidTensor

Value = bool | int | float | str


def parameters(given: Mapping[str, pb.InferParameter]) -> dict[str, Value]:
    """A message's `parameters` map as plain values."""
    values: dict[str, Value] = {}
    for name, parameter in given.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is None:
            raise InvalidTensor(f"parameter {name!r} has no value")
        values[name] = getattr(parameter, kind)
    return values


@dataclass(frozen=True, slots=True)
class InferCall:
    """A ModelInferRequest taken apart into the pipeline's forms."""

    model: str
    version: str
    parsed: Parsed
    binary: BinaryData  # the raw contents the inputs point into


def infer_call(message: pb.ModelInferRequest) -> InferCall:
    """The message taken apart (its raw contents copied out once)."""
    parsed, binary = _infer_request(message)
    return InferCall(message.model_name, message.model_version, parsed, binary)


def _infer_request(message: pb.ModelInferRequest) -> tuple[Parsed, BinaryData]:
    raw = list(message.raw_input_contents)  # each element read (copied) once
    if raw and len(raw) != len(message.inputs):
        raise InvalidTensor(
            f"raw_input_contents holds {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs = []
    for i, tensor in enumerate(message.inputs):
        given = parameters(tensor.parameters)
        given.pop("binary_data_size", None)  # REST's framing; here it comes from raw
        if raw:
            given["binary_data_size"] = len(raw[i])
        inputs.append(
            {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
            | {"parameters": given}
        )
    outputs = []
    for output in message.outputs:
        given = parameters(output.parameters)
        given.pop("binary_data", None)  # always binary: raw_output_contents
        outputs.append({"name": output.name, "parameters": given})
    body: dict[str, Any] = {
        "inputs": inputs,
        "parameters": parameters(message.parameters) | {"binary_data_output": True},
    }
    if outputs:
        body["outputs"] = outputs
    if message.id:
        body["id"] = message.id
    try:
        request = InferenceRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidTensor(f"invalid inference request: {validation_message(exc)}") from None
    binary = memoryview(raw[0]) if len(raw) == 1 else memoryview(b"".join(raw))
    converted = None if raw or len(message.inputs) != 1 else _typed(message.inputs[0])
    return Parsed(request, converted), BinaryData(binary)


def _typed(tensor: pb.ModelInferRequest.InferInputTensor) -> Converted:
    """The one input's typed contents: files for `images`, an array for `pixels`."""
    contents = tensor.contents
    if tensor.name == IMAGES and tensor.datatype == "BYTES":
        return list(contents.bytes_contents)
    if tensor.name == PIXELS and tensor.datatype == "UINT8":
        values = np.asarray(contents.uint_contents, dtype=np.uint32)
        if values.size != math.prod(tensor.shape):
            raise InvalidTensor(
                f"input {PIXELS!r} has shape {list(tensor.shape)} but {values.size} elements"
            )
        if values.size and values.max() > 255:
            raise InvalidTensor(f"input {PIXELS!r}: UINT8 elements must be within 0..255")
        return values.astype(np.uint8).reshape(tuple(tensor.shape))
    return None  # the pipeline names what is wrong with the input


def infer_response(answer: dict[str, Any], blobs: list[bytes]) -> pb.ModelInferResponse:
    """The pipeline's answer (every output binary) as the protocol's response."""
    response = pb.ModelInferResponse(
        model_name=answer["model_name"],
        model_version=answer["model_version"],
        id=answer.get("id", ""),
        raw_output_contents=blobs,
    )
    for output in answer["outputs"]:
        response.outputs.add(
            name=output["name"], datatype=output["datatype"], shape=output["shape"]
        )
    return response


def metadata_response(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    def tensor(t: Any) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=t.name, datatype=t.datatype, shape=t.shape
        )

    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[tensor(t) for t in metadata.inputs],
        outputs=[tensor(t) for t in metadata.outputs],
    )


def config_response(config: dict[str, Any]) -> pb.ModelConfigResponse:
    """REST's configuration (model_config.proto as JSON) as the message."""
    return pb.ModelConfigResponse(config=json_format.ParseDict(config, model_config.ModelConfig()))


def statistics_response(report: dict[str, Any]) -> pb.ModelStatisticsResponse:
    return json_format.ParseDict(report, pb.ModelStatisticsResponse())

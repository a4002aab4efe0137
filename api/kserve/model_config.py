"""`GET /v2/models/{model}/config`: the model's configuration in Triton's shape
(model_config.proto as JSON), which Triton's clients and tools read
(`tritonclient.http.InferenceServerClient.get_model_config`)."""

from __future__ import annotations

from typing import Any

from resnet_serve.api.kserve.inference import PROBABILITIES, platform
from resnet_serve.api.kserve.tensors import IMAGES, PIXELS
from resnet_serve.shared.jobs import ModelInfo

_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch"}


def model_config(info: ModelInfo, max_batch: int, max_batch_wait_ms: float) -> dict[str, Any]:
    """Batched model: `dims` leave out the batch dimension, as in Triton. `images` is one
    encoded file per batch entry (a BYTES element, reshaped to a scalar)."""
    size = info.input_size
    name = platform(info.engine)
    return {
        "name": info.name,
        "platform": name,
        "backend": _BACKENDS.get(name, info.engine),
        "version_policy": {"specific": {"versions": [info.version]}},
        "max_batch_size": max_batch,
        "input": [
            {
                "name": IMAGES,
                "data_type": "TYPE_STRING",
                "format": "FORMAT_NONE",
                "dims": [1],
                "reshape": {"shape": []},
                "optional": True,
            },
            {
                "name": PIXELS,
                "data_type": "TYPE_UINT8",
                "format": "FORMAT_NHWC",
                "dims": [size, size, 3],
                "optional": True,
            },
        ],
        "output": [
            {"name": PROBABILITIES, "data_type": "TYPE_FP32", "dims": [info.num_classes]},
        ],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(max_batch_wait_ms * 1000),
        },
        "parameters": {"precision": {"string_value": info.precision}},
    }

"""One KServe v2 inference: the model's tensors, input tensors to jobs, results to outputs.

A model takes one of two inputs, and answers one output:
- `images`  BYTES [N] (or [N, 1]): encoded image files, decoded in the gateway's pool;
- `pixels`  UINT8 [N, S, S, 3]: images the client already resized and cropped;
- `probabilities` FP32 [N, classes], or with Triton's classification extension
  BYTES [N, k] strings "score:index:label".
Each image becomes one `Job` for the broker, so v2 requests share batches with /v1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from resnet_serve.api.kserve.codec import BinaryData, pack_bytes
from resnet_serve.api.kserve.parsing import Parsed
from resnet_serve.api.kserve.schemas import (
    InferenceRequest,
    ModelMetadata,
    RequestOutput,
    TensorMetadata,
)
from resnet_serve.api.kserve.tensors import (
    IMAGES,
    PIXELS,
    count,
    flag,
    gather_all,
    input_count,
    input_images,
)
from resnet_serve.api.pipeline.admission import queue_places
from resnet_serve.api.pipeline.classifier import Classifier, Target
from resnet_serve.shared.broker import Broker, Reservation
from resnet_serve.shared.errors import InferenceFailed, InvalidTensor, ServeError, UnknownModel
from resnet_serve.shared.jobs import ModelInfo, Result

PROBABILITIES = "probabilities"
# Triton's platform names, so tools that look at `platform` recognise the artifact.
_PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "openvino": "openvino_ir",
}


def platform(engine: str) -> str:
    """Triton's platform name for an engine."""
    return _PLATFORMS.get(engine, engine)


def served_model(broker: Broker, name: str, version: str | None) -> ModelInfo:
    """The served model `name` (and `version`), whether or not it is ready yet."""
    info = broker.models().get(name)
    if info is None:
        if not broker.ready():
            raise broker.not_ready_error()
        served = ", ".join(broker.models())
        raise UnknownModel(f"model {name!r} is not served here (served: {served})")
    if version is not None and version != info.version:
        raise UnknownModel(f"model {name!r} has no version {version!r} (served: {info.version})")
    return info


def metadata(info: ModelInfo) -> ModelMetadata:
    size = info.input_size
    return ModelMetadata(
        name=info.name,
        versions=[info.version],
        platform=platform(info.engine),
        inputs=[
            TensorMetadata(name=IMAGES, datatype="BYTES", shape=[-1]),
            TensorMetadata(name=PIXELS, datatype="UINT8", shape=[-1, size, size, 3]),
        ],
        outputs=[TensorMetadata(name=PROBABILITIES, datatype="FP32", shape=[-1, info.num_classes])],
        precision=info.precision,
        top1_agreement=info.top1_agreement,
        top5_containment=info.top5_containment,
        accuracy_gate_passed=info.accuracy_gate_passed,
        top1_drop_pt=info.top1_drop_pt,
        top1_drop_bound_pt=info.top1_drop_bound_pt,
    )


@dataclass(frozen=True, slots=True)
class OutputRequest:
    name: str
    classification: int  # top-k strings; 0 for the plain FP32 tensor
    binary: bool


def output_requests(request: InferenceRequest, info: ModelInfo) -> list[OutputRequest]:
    """What to answer; no `outputs` means every output, as JSON unless
    `binary_data_output` says otherwise."""
    default_binary = flag(request.parameters, "binary_data_output", False)
    wanted = request.outputs or [RequestOutput(name=PROBABILITIES)]
    if len({o.name for o in wanted}) != len(wanted):
        raise InvalidTensor("each output may be requested once")
    answers = []
    for output in wanted:
        if output.name != PROBABILITIES:
            raise InvalidTensor(f"unknown output {output.name!r}; this model has {PROBABILITIES!r}")
        k = count(output.parameters, "classification", f"output {output.name!r}") or 0
        if k > info.num_classes:
            raise InvalidTensor(
                f"classification asks for {k} classes; the model has {info.num_classes}"
            )
        binary = flag(output.parameters, "binary_data", default_binary)
        answers.append(OutputRequest(output.name, k, binary))
    return answers


async def run(
    classifier: Classifier,
    info: ModelInfo,
    parsed: Parsed,
    binary: BinaryData,
    request_id: str,
    received_at: float,
    deadline: float,
) -> tuple[dict[str, Any], list[bytes]]:
    """The response's JSON header and the binary blobs that follow it. Queue places
    are reserved before any image is decoded. Counted in the model's statistics."""
    try:
        request = parsed.request
        output_requests(request, info)  # a bad `outputs` is a 400 before any place is taken
        wanted = min(max(input_count(request), 1), classifier.settings.max_files_per_request)
        async with queue_places(classifier.broker, info.name, wanted, deadline) as places:
            answer, blobs, decode_s, results = await _run(
                classifier, info, parsed, binary, request_id, deadline, places
            )
    except ServeError:
        classifier.statistics.failed(info, received_at)
        raise
    classifier.statistics.succeeded(info, received_at, decode_s, results)
    return answer, blobs


async def _run(
    classifier: Classifier,
    info: ModelInfo,
    parsed: Parsed,
    binary: BinaryData,
    request_id: str,
    deadline: float,
    places: Reservation,
) -> tuple[dict[str, Any], list[bytes], float, list[Result]]:
    request = parsed.request
    outputs = output_requests(request, info)
    inputs = input_images(request, binary, classifier.settings, info, parsed.converted)
    work = _Work(
        classifier,
        info,
        request_id,
        deadline,
        places,
        Target(
            top_k=max(max(o.classification for o in outputs), 1),
            full_scores=any(o.classification == 0 for o in outputs),
        ),
    )
    if inputs.files is not None:
        answered = await gather_all((work.file(data) for data in inputs.files), IMAGES)
    else:
        crops = inputs.pixels or []
        answered = await gather_all((work.crop(c) for c in crops), PIXELS)
    results = [result for result, _ in answered]
    entries, blobs = response_outputs(outputs, results)
    answer: dict[str, Any] = {"model_name": info.name, "model_version": info.version}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = entries
    return answer, blobs, max((s for _, s in answered), default=0.0), results


@dataclass(frozen=True, slots=True)
class _Work:
    """One request's images to results, each a job on a queue place already reserved;
    encoded files through the response cache and the decode pool (as /v1's)."""

    classifier: Classifier
    info: ModelInfo
    request_id: str
    deadline: float
    places: Reservation
    target: Target

    async def file(self, data: bytes) -> tuple[Result, float]:
        """(its result, seconds decoding it): cached, or decoded and inferred."""
        target = self.target
        key, cached = self.classifier.cached(self.info, data, target.top_k, target.full_scores)
        if cached is not None:
            return cached, 0.0
        return await self.classifier.infer(
            data, self.info, target, key, self.request_id, self.deadline, self.places
        )

    async def crop(self, crop: np.ndarray) -> tuple[Result, float]:
        """A model-ready crop's result (nothing to decode)."""
        result = await self.classifier.submit(
            crop, self.info, self.target, self.request_id, self.deadline, self.places
        )
        return result, 0.0


def response_outputs(
    outputs: list[OutputRequest], results: list[Result]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The response's output objects, and the binary blobs that follow the JSON header."""
    entries, blobs = [], []
    for output in outputs:
        entry: dict[str, Any] = {"name": output.name}
        if output.classification:
            strings = [
                f"{p.score!r}:{p.index}:{p.label}"
                for result in results
                for p in result.predictions[: output.classification]
            ]
            entry |= {"datatype": "BYTES", "shape": [len(results), output.classification]}
            blob = pack_bytes([s.encode() for s in strings]) if output.binary else None
            data: list[Any] = strings
        else:
            scores = _scores(results)
            entry |= {"datatype": "FP32", "shape": list(scores.shape)}
            blob = scores.astype("<f4", copy=False).tobytes() if output.binary else None
            data = scores.ravel().tolist() if not output.binary else []
        if blob is not None:
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        entries.append(entry)
    return entries, blobs


def _scores(results: list[Result]) -> np.ndarray:
    rows = [result.scores for result in results if result.scores is not None]
    if len(rows) != len(results):
        # A broker that drops Job.full_scores on its way to the worker: a server bug.
        raise InferenceFailed("the worker returned no probability vector")
    return np.stack(rows).astype(np.float32, copy=False)

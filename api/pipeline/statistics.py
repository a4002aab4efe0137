"""Per-model inference statistics in Triton's shape (its statistics extension), served at
REST `GET /v2/models/{m}/stats` and gRPC `ModelStatistics`.

They count what this gateway answered for KServe v2 requests (REST and gRPC): per
gateway, not cluster-wide; Prometheus sums gateways. Durations of a request are its
slowest image's: `queue` waiting for a batch, `compute_input` decoding, `compute_infer`
the engine's batch. `execution_count` counts batches as fractions (an image in a batch
of 8 is an eighth of an execution), so it is exact while batches hold this gateway's
requests only, and an estimate where gateways share batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from resnet_serve.shared.jobs import ModelInfo, Result

_NS = 1_000_000_000


@dataclass(slots=True)
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += round(seconds * _NS)

    def out(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class _Model:
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    executions: float = 0.0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)

    def out(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": round(self.executions),
            "inference_stats": {
                "success": self.success.out(),
                "fail": self.fail.out(),
                "queue": self.queue.out(),
                "compute_input": self.compute_input.out(),
                "compute_infer": self.compute_infer.out(),
                "compute_output": self.compute_output.out(),
                "cache_hit": _Duration().out(),
                "cache_miss": _Duration().out(),
            },
            "batch_stats": [],
        }


class InferenceStatistics:
    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}

    def _model(self, info: ModelInfo) -> _Model:
        model = self._models.get(info.name)
        if model is None or model.version != info.version:
            model = self._models[info.name] = _Model(info.version)
        return model

    def succeeded(
        self, info: ModelInfo, received_at: float, decode_s: float, results: list[Result]
    ) -> None:
        """A request answered: `received_at` on time.time()'s clock."""
        now = time.time()
        model = self._model(info)
        model.success.add(now - received_at)
        model.last_inference_ms = int(now * 1000)
        model.inference_count += len(results)
        model.executions += sum(1 / max(r.batch_size, 1) for r in results)
        model.queue.add(max((r.queue_ms for r in results), default=0.0) / 1000)
        model.compute_input.add(decode_s)
        model.compute_infer.add(max((r.inference_ms for r in results), default=0.0) / 1000)
        model.compute_output.add(0.0)

    def failed(self, info: ModelInfo, received_at: float) -> None:
        self._model(info).fail.add(time.time() - received_at)

    def report(self, models: list[ModelInfo]) -> dict[str, Any]:
        """Triton's `ModelStatisticsResponse` as JSON, for `models` (zeros where none ran)."""
        stats = [
            (self._models[m.name] if self._is_current(m) else _Model(m.version)).out(m.name)
            for m in models
        ]
        return {"model_stats": stats}

    def _is_current(self, info: ModelInfo) -> bool:
        model = self._models.get(info.name)
        return model is not None and model.version == info.version

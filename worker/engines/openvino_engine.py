"""OpenVINO on the CPU: runs the INT8 artifact (twice the fp32 speed on AVX2). No torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from resnet_serve.worker.engines.base import thread_count


class OpenVinoEngine:
    name = "openvino"
    device = "cpu"

    def __init__(self, path: Path, *, precision: str = "int8", threads: int = 0) -> None:
        if precision != "int8":
            raise ValueError(f"the OpenVINO engine runs the INT8 artifact, not {precision}")
        self.precision = precision
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": thread_count(threads),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # Layers left in fp32 run in fp32, as the accuracy gate measured them (the CPU
            # plugin would otherwise run them in bf16 on CPUs that have it).
            "INFERENCE_PRECISION_HINT": "f32",
            # Pinned threads would fight the decode pool for the same cores.
            "ENABLE_CPU_PINNING": False,
        }
        self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._request = self._compiled.create_infer_request()

    def infer(self, images: np.ndarray) -> np.ndarray:
        result = self._request.infer({0: images})
        return np.asarray(result[0], dtype=np.float32)

    def close(self) -> None:
        del self._request
        del self._compiled

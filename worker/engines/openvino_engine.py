"""OpenVINO on the CPU: the INT8 artifact, and the fp32 ONNX artifact in f32 or, on CPUs
with native bf16 (AVX512-BF16/AMX), bf16. No torch."""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np
import openvino as ov

from resnet_serve.shared.cpus import thread_count

# The CPU plugin's inference precision per artifact precision. INT8 runs its layers left
# in fp32 in f32, as the accuracy gate measured them (the plugin would otherwise run them
# in bf16 on CPUs that have it).
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class OpenVinoEngine:
    name = "openvino"
    device = "cpu"

    def __init__(
        self, path: Path, *, precision: str = "int8", threads: int = 0, streams: int = 1
    ) -> None:
        if precision not in _HINTS:
            raise ValueError(f"the OpenVINO engine runs fp32, bf16 or int8, not {precision}")
        self.precision = precision
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": thread_count(threads) * streams,
            "NUM_STREAMS": streams,
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            # Pinned threads would fight the decode pool for the same cores.
            "ENABLE_CPU_PINNING": False,
        }
        self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        # A request runs one call at a time: one per stream, taken by whichever call
        # comes (results are copied out, so a request is free again once it returns).
        self._idle: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(streams):
            self._idle.put(self._compiled.create_infer_request())

    def infer(self, images: np.ndarray) -> np.ndarray:
        request = self._idle.get()
        try:
            result = request.infer({0: images})
        finally:
            self._idle.put(request)
        return np.asarray(result[0], dtype=np.float32)

    def close(self) -> None:
        del self._idle
        del self._compiled

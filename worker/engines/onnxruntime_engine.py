"""ONNX Runtime on the CPU: the default CPU engine (fastest fp32 here, and no torch import)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from resnet_serve.shared.cpus import thread_count


class OnnxRuntimeEngine:
    name = "onnxruntime"
    device = "cpu"

    def __init__(self, path: Path, *, precision: str = "fp32", threads: int = 0) -> None:
        if precision != "fp32":
            raise ValueError(f"the ONNX Runtime engine runs fp32 only, not {precision}")
        self.precision = precision
        options = ort.SessionOptions()
        options.intra_op_num_threads = thread_count(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads would steal the cores that decode uploads between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def infer(self, images: np.ndarray) -> np.ndarray:
        (probabilities,) = self._session.run(None, {self._input: images})
        return np.asarray(probabilities, dtype=np.float32)

    def close(self) -> None:
        del self._session

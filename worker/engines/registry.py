"""Open an artifact file with the engine for its backend, importing only that engine."""

from __future__ import annotations

from pathlib import Path

from resnet_serve.worker.engines.base import Engine


def open_engine(path: Path, *, backend: str, precision: str, device: str, threads: int) -> Engine:
    if backend == "onnx":
        from resnet_serve.worker.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, precision=precision, threads=threads)
    if backend == "torchscript":
        from resnet_serve.worker.engines.torchscript_engine import TorchScriptEngine

        return TorchScriptEngine(path, precision=precision, device=device, threads=threads)
    if backend == "openvino":
        from resnet_serve.worker.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, precision=precision, threads=threads)
    raise ValueError(f"no engine for backend {backend!r}")

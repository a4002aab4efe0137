"""The engines this distribution ships, as plug-ins (pyproject.toml's entry points in
`resnet_serve.engines`). Each imports its runtime only when it opens an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from resnet_serve.worker.engines.base import Engine

if TYPE_CHECKING:
    from resnet_serve.shared.settings import Settings


class _ArtifactEngine:
    def load_model(self, settings: Settings) -> NoReturn:
        raise TypeError("this engine serves built artifacts (worker/model/loading.py)")


class OnnxRuntime(_ArtifactEngine):
    name, backend = "onnxruntime", "onnx"

    def open(
        self, path: Path, *, precision: str, device: str, threads: int, streams: int = 1
    ) -> Engine:
        from resnet_serve.worker.engines.onnxruntime_engine import OnnxRuntimeEngine

        # A session runs concurrent calls safely, each on its own intra-op threads.
        return OnnxRuntimeEngine(path, precision=precision, threads=threads)


class TorchScript(_ArtifactEngine):
    name, backend = "torchscript", "torchscript"

    def open(
        self, path: Path, *, precision: str, device: str, threads: int, streams: int = 1
    ) -> Engine:
        from resnet_serve.worker.engines.torchscript_engine import TorchScriptEngine

        if streams > 1:
            raise ValueError("the torchscript engine runs one batch at a time (streams 1)")
        return TorchScriptEngine(path, precision=precision, device=device, threads=threads)


class OpenVino(_ArtifactEngine):
    name, backend = "openvino", "openvino"

    def open(
        self, path: Path, *, precision: str, device: str, threads: int, streams: int = 1
    ) -> Engine:
        from resnet_serve.worker.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, precision=precision, threads=threads, streams=streams)


onnxruntime = OnnxRuntime()
torchscript = TorchScript()
openvino = OpenVino()

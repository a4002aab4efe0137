"""Pick the engine and precision for this machine, and say why."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from resnet_serve.worker.engines.registry import plugin


@dataclass(frozen=True, slots=True)
class EngineChoice:
    engine: str
    precision: str
    device: str
    reason: str

    @property
    def backend(self) -> str:
        return plugin(self.engine).backend

    @property
    def artifact_device(self) -> str:
        return "any" if self.backend == "onnx" else self.device


def cuda_present() -> bool:
    """A CUDA device torch can use; checked without importing torch when there is none."""
    gpus = Path("/proc/driver/nvidia/gpus")
    if not (gpus.is_dir() and any(gpus.iterdir())):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def torch_installed() -> bool:
    """Without importing it: a `cpu-worker` install has no torch, so no TorchScript."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _auto_engine(precision: str, *, cuda: bool, int8_passed: bool) -> tuple[str, str]:
    """The engine `auto` means on this machine, and why. A reduced precision on the CPU
    is served only as an artifact that passed its accuracy gate (INT8 today); bf16 is
    never chosen by CPU flag alone, and only when asked for by name."""
    if precision == "int8":
        return "openvino", "INT8 asked for; OpenVINO runs it on the CPU"
    if cuda:
        return "torchscript", "a CUDA device is present"
    if precision == "auto" and int8_passed:
        return "openvino", "CPU only, and the INT8 artifact passed its accuracy gate"
    if precision == "bf16" and openvino_installed():
        return "openvino", "bf16 asked for; OpenVINO runs it on the CPU, without torch"
    if precision == "bf16":
        return "torchscript", "bf16 asked for; TorchScript runs it on the CPU"
    if not torch_installed():
        return "onnxruntime", "no torch in this install: ONNX Runtime serves"
    if precision == "auto":
        return "onnxruntime", "CPU only, and no INT8 artifact passed its accuracy gate"
    return "onnxruntime", "CPU only; ONNX Runtime is the fastest fp32 CPU engine"


def _auto_precision(engine: str, device: str) -> str:
    if engine == "openvino":
        return "int8"
    if device == "cuda":
        return "fp16"
    return "fp32"


def choose_engine(engine: str, precision: str, *, int8_passed: bool = False) -> EngineChoice:
    """Resolve "auto" settings; reject combinations no engine can run and engines that
    are not installed. `auto` picks among this distribution's engines only.
    `int8_passed`: an INT8 artifact of these weights exists and its recorded accuracy
    gate passed."""
    if engine != "auto" and not plugin(engine).backend:
        raise ValueError(f"the {engine} engine serves without an artifact: nothing to build")
    cuda = cuda_present()
    if engine == "auto":
        engine, reason = _auto_engine(precision, cuda=cuda, int8_passed=int8_passed)
    else:
        reason = "set explicitly"
    device = "cuda" if engine == "torchscript" and cuda else "cpu"
    if precision == "auto":
        precision = _auto_precision(engine, device)
    if precision == "fp16" and device != "cuda":
        raise ValueError("fp16 needs a CUDA device; on CPU use fp32 or bf16")
    if engine == "onnxruntime" and precision != "fp32":
        raise ValueError("the onnxruntime engine runs fp32; use --engine openvino for bf16 or int8")
    if precision == "int8" and engine != "openvino":
        raise ValueError("int8 runs on the openvino engine")
    if engine == "openvino" and precision == "fp16":
        raise ValueError("the openvino engine runs fp32, bf16 or int8 on the CPU")
    return EngineChoice(engine, precision, device, reason)

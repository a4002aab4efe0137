"""TEST-ONLY engine that injects faults: `RESNET_SERVE_ENGINE=fault`. Never chosen by
`auto`, never built into an artifact, predictions meaningless.

It makes the distributed fault tests and benchmarks deterministic on a loaded two-core
machine: every batch takes `FAULT_ENGINE_LATENCY_MS` (sleeping, so no CPU is used), and
the JSON file named by `FAULT_ENGINE_CONTROL_FILE`, read before each batch, injects
failures:

    {"mode": "ok" | "fail" | "fatal" | "hang", "latency_ms": 250, "oom_above": 4}

- "fail": every call raises an ordinary error (a broken engine that looks like bad input);
- "fatal": every call raises `FatalEngineError` (a device error);
- "hang": the call never returns (a hung device);
- "oom_above": N: a batch of more than N images runs out of device memory, as torch
  says it (a RuntimeError "CUDA out of memory");
- a tensor of the wrong shape fails alone, as with the real engines (a bad input).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from resnet_serve.worker.engines.base import FatalEngineError

NUM_CLASSES = 1000


class InjectedFault(RuntimeError):
    """The failure the control file asked for."""


class FaultEngine:
    name = "fault"
    precision = "fp32"
    device = "cpu"

    def __init__(self, *, input_size: int, latency_ms: float, control_file: Path | None) -> None:
        self.input_size = input_size
        self.latency_s = latency_ms / 1000
        self.control_file = control_file
        self._closed = threading.Event()

    def _control(self) -> dict[str, object]:
        if self.control_file is None:
            return {}
        try:
            control = json.loads(self.control_file.read_text())
        except (OSError, ValueError):
            return {}
        return control if isinstance(control, dict) else {}

    def infer(self, images: np.ndarray) -> np.ndarray:
        control = self._control()
        latency = control.get("latency_ms")
        time.sleep(float(latency) / 1000 if isinstance(latency, int | float) else self.latency_s)
        mode = control.get("mode", "ok")
        if mode == "hang":
            self._closed.wait()  # until close(): as good as forever
            raise InjectedFault("the engine was closed while hung")
        if mode == "fatal":
            raise FatalEngineError("injected fatal device error")
        if mode == "fail":
            raise InjectedFault("injected engine failure")
        limit = control.get("oom_above")
        if isinstance(limit, int) and len(images) > limit:
            raise InjectedFault(f"CUDA out of memory. Tried to allocate a batch of {len(images)}")
        size = self.input_size
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [N, {size}, {size}, 3], got {images.shape}")
        # Deterministic per image: the class is the pixel sum modulo the class count.
        top = images.reshape(len(images), -1).sum(axis=1, dtype=np.int64) % NUM_CLASSES
        probabilities = np.full((len(images), NUM_CLASSES), 0.1 / NUM_CLASSES, np.float32)
        probabilities[np.arange(len(images)), top] += 0.9
        return probabilities

    def close(self) -> None:
        self._closed.set()

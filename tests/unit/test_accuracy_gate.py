"""The accuracy gate judges the loss of top-1 accuracy, bounded over photos, with guards
where the estimate cannot see: random weights, too little evidence, confident flips."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_serve.worker.model.accuracy_gate import judge
from resnet_serve.worker.model.artifacts import Accuracy

CLASSES = 20


def probabilities(top: np.ndarray, p_top: float, second: np.ndarray | None = None) -> np.ndarray:
    """Rows with `p_top` on class `top`, and (optionally) all but a sliver of the rest
    on class `second`."""
    rows = np.arange(len(top))
    out = np.full((len(top), CLASSES), 0.0)
    out[rows, top] = p_top
    rest = 1 - p_top
    if second is None:
        out += rest / CLASSES
        out[rows, top] -= rest / CLASSES
    else:
        out[rows, second] = rest * 0.99
        out += rest * 0.01 / CLASSES
    return out / out.sum(1, keepdims=True)


def crops_of(photos: int, per: int) -> tuple[np.ndarray, np.ndarray]:
    owner = np.repeat(np.arange(photos), per)
    top = np.random.default_rng(0).integers(0, CLASSES, len(owner))
    return owner, top


def gate(
    reference: np.ndarray,
    candidate: np.ndarray,
    owner: np.ndarray,
    *,
    max_drop_pt: float = 1.0,
    random_weights: bool = False,
    labels: np.ndarray | None = None,
) -> Accuracy:
    return judge(
        reference,
        candidate,
        owner,
        max_drop_pt=max_drop_pt,
        random_weights=random_weights,
        labels=labels,
    )


def test_the_same_answers_pass() -> None:
    owner, top = crops_of(8, 50)
    reference = probabilities(top, 0.9)
    passed = gate(reference, reference.copy(), owner)
    assert passed.passed, passed.reason
    assert (passed.drop_pt, passed.drop_upper_pt, passed.top1_agreement) == (0, 0, 1)
    assert (passed.photos, passed.crops, passed.confident_crops) == (8, 400, 400)


def test_random_weights_never_pass_even_with_the_same_answers() -> None:
    owner, top = crops_of(8, 50)
    reference = probabilities(top, 0.9)
    refused = gate(reference, reference, owner, random_weights=True)
    assert not refused.passed
    assert refused.reason == "random weights never pass"


def test_flips_between_near_ties_cost_nothing_flips_of_confident_answers_do() -> None:
    owner, top = crops_of(8, 50)
    second = (top + 1) % CLASSES
    confident = probabilities(top, 0.9)
    tied = probabilities(top, 0.499, second)  # fp32 torn between two classes
    assert (tied.argmax(1) == top).all()
    # Half the crops are near-ties the candidate answers the other way.
    reference = np.vstack([tied, confident])
    candidate = np.vstack([probabilities(second, 0.6, top), confident])
    near = gate(reference, candidate, np.concatenate([owner, owner]))
    assert near.top1_agreement == 0.5  # half the answers changed...
    assert near.drop_pt < 0.5  # ...at (almost) no cost in accuracy
    assert near.passed, near.reason

    wrong = probabilities(second, 0.9)
    some = np.where((np.arange(len(top)) % 10 == 0)[:, None], wrong, confident)
    far = gate(confident, some, owner)  # one confident answer in ten changed
    assert far.top1_agreement == pytest.approx(0.9)
    assert far.drop_pt > 5
    assert not far.passed
    assert "bound" in far.reason


def test_a_rising_perturbation_gives_a_rising_estimate_that_fails_past_a_point() -> None:
    owner, top = crops_of(10, 60)
    reference = probabilities(top, 0.7)
    rng = np.random.default_rng(1)
    drops, passes = [], []
    for sigma in (0.0, 0.3, 1.0, 3.0):
        logits = np.log(reference) + rng.normal(0, sigma, reference.shape)
        noisy = np.exp(logits - logits.max(1, keepdims=True))
        verdict = gate(reference, noisy / noisy.sum(1, keepdims=True), owner)
        drops.append(verdict.drop_pt)
        passes.append(verdict.passed)
    assert drops == sorted(drops)
    assert passes == [True, True, False, False]


def test_the_bound_is_taken_over_photos_not_crops() -> None:
    """The same losses, spread over all photos or all in one photo: the mean is equal,
    the bound is not (one photo is one observation, however many crops it has)."""
    owner, top = crops_of(10, 40)
    reference = probabilities(top, 0.9)
    spread_rows = np.arange(len(top)) % 40 == 0  # one crop of each photo
    lumped_rows = np.arange(len(top)) < 10  # ten crops of the first photo
    results = []
    for rows in (spread_rows, lumped_rows):
        candidate = reference.copy()
        candidate[rows] = probabilities((top[rows] + 1) % CLASSES, 0.9)
        results.append(gate(reference, candidate, owner, max_drop_pt=10))
    spread, lumped = results
    assert spread.drop_pt == pytest.approx(lumped.drop_pt)
    assert lumped.drop_upper_pt > 1.5 * spread.drop_upper_pt


def test_too_little_evidence_never_passes() -> None:
    owner, top = crops_of(4, 100)
    reference = probabilities(top, 0.9)
    few_photos = gate(reference, reference, owner)
    assert not few_photos.passed
    assert few_photos.reason == "too little evidence: 4 held-out photos (needs 5)"

    owner, top = crops_of(8, 50)
    unsure = probabilities(top, 0.2)  # textures, micrographs: fp32 confident on nothing
    blind = gate(unsure, unsure, owner)
    assert blind.confident_crops == 0
    assert not blind.passed
    assert "fp32 is confident on 0 crops" in blind.reason


def test_labels_measure_the_drop_instead_of_estimating_it() -> None:
    owner, top = crops_of(8, 50)
    reference = probabilities(top, 0.9)
    labels = top.copy()
    labels[:40] = (top[:40] + 1) % CLASSES  # fp32 wrong on 40 crops
    candidate = reference.copy()
    candidate[40:44] = probabilities((top[40:44] + 1) % CLASSES, 0.9)  # 4 new errors
    candidate[:2] = probabilities(labels[:2], 0.9)  # 2 errors fixed
    measured = gate(reference, candidate, owner, labels=labels, max_drop_pt=5)
    assert measured.labelled
    assert measured.drop_pt == pytest.approx(100 * (4 - 2) / 400)


def test_top5_containment_is_required() -> None:
    owner, top = crops_of(8, 50)
    reference = probabilities(top, 0.9)
    candidate = probabilities((top + 1) % CLASSES, 0.9)
    candidate[np.arange(len(top)), top] = 0.0  # fp32's answer last in the candidate's list
    verdict = gate(reference, candidate, owner, max_drop_pt=100)  # any drop allowed
    assert not verdict.passed
    assert verdict.top5_containment == 0
    assert verdict.reason.startswith("top-5 containment")

"""What travels from the gateway to a worker and back."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Job:
    """One preprocessed image waiting for inference.

    `deadline` is on this process's wall clock (`time.time()`). It crosses Redis as a
    budget too, and a worker re-bases it on Redis's clock (worker/redis_worker.py), so
    hosts whose clocks disagree still agree on it.
    """

    request_id: str
    model: str
    image: np.ndarray  # uint8, H x W x 3
    top_k: int
    deadline: float
    enqueued_at: float = field(default_factory=time.time)
    # One request may carry several images; each image is its own job.
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Ask for the whole probability vector in `Result.scores`, not only the top-k
    # (KServe v2's FP32 output); off by default, so the reply stays small.
    full_scores: bool = False

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.deadline


@dataclass(frozen=True, slots=True)
class Prediction:
    index: int
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Result:
    model: str
    version: str
    predictions: list[Prediction]
    queue_ms: float
    inference_ms: float
    batch_size: int
    # float32 [num_classes] probabilities, only when the job asked for `full_scores`.
    scores: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One live worker of a model, as its heartbeat announces it: workers of one model
    may run different engines on different CPUs."""

    worker_id: str
    version: str
    engine: str
    precision: str
    images_per_s: float = 0.0
    cpu: str = ""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a gateway needs to know about a served model, engine and precision included
    (shown by /v1/models and the KServe metadata)."""

    name: str
    version: str
    engine: str
    precision: str
    input_size: int
    resize_size: int
    num_classes: int
    # Built from random weights (plumbing and benchmarks): its predictions mean nothing.
    random_weights: bool = False
    # Reduced precisions: their accuracy gate's record against fp32 (None for fp32).
    top1_agreement: float | None = None
    top5_containment: float | None = None
    accuracy_gate_passed: bool | None = None
    top1_drop_pt: float | None = None
    top1_drop_bound_pt: float | None = None

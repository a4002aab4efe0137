"""What crosses Redis: a job is a small versioned JSON header plus the raw uint8 tensor;
a reply is JSON. No pickle: either side can be upgraded, or read by another language."""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from resnet_serve.shared.errors import ServeError, error_for_code
from resnet_serve.shared.jobs import Job, ModelInfo, Prediction, Result

VERSION = 1
HEADER, TENSOR = b"header", b"tensor"


class MalformedMessage(ValueError):
    """A message this version cannot read: dead-lettered at once, never retried."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A job as a worker received it, with where its answer goes."""

    job: Job
    reply_to: str
    # Seconds the job had left when its gateway queued it (absent from old gateways).
    # Workers judge the deadline from it on Redis's clock, so host clocks may disagree.
    budget_s: float | None = None


def encode_job(job: Job, reply_to: str) -> dict[bytes, bytes]:
    image = np.ascontiguousarray(job.image, dtype=np.uint8)
    header = {
        "v": VERSION,
        "job_id": job.job_id,
        "request_id": job.request_id,
        "model": job.model,
        "shape": list(image.shape),
        "dtype": "uint8",
        "top_k": job.top_k,
        "deadline": job.deadline,
        "enqueued_at": job.enqueued_at,
        "reply_to": reply_to,
        # The deadline again, as a budget: immune to clock skew between hosts.
        "budget_s": max(job.deadline - time.time(), 0.0),
    }
    if job.full_scores:  # optional: only KServe v2's FP32 output asks for it
        header["full_scores"] = True
    return {HEADER: json.dumps(header).encode(), TENSOR: image.tobytes()}


def decode_header(fields: dict[bytes, bytes]) -> dict[str, Any]:
    try:
        header = json.loads(fields[HEADER])
    except (KeyError, ValueError) as exc:
        raise MalformedMessage(f"unreadable job header: {exc}") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise MalformedMessage(f"unsupported job header version: {header!r:.80}")
    return header


def decode_job(fields: dict[bytes, bytes]) -> Envelope:
    header = decode_header(fields)
    try:
        shape = tuple(int(n) for n in header["shape"])
        data = fields[TENSOR]
        if header["dtype"] != "uint8" or len(shape) != 3 or math.prod(shape) != len(data):
            raise MalformedMessage(f"tensor does not match its header: {shape}, {len(data)} B")
        job = Job(
            request_id=str(header["request_id"]),
            model=str(header["model"]),
            image=np.frombuffer(data, dtype=np.uint8).reshape(shape),
            top_k=int(header["top_k"]),
            deadline=float(header["deadline"]),
            enqueued_at=float(header["enqueued_at"]),
            job_id=str(header["job_id"]),
            full_scores=header.get("full_scores") is True,
        )
        budget = header.get("budget_s")
        budget_s = float(budget) if isinstance(budget, int | float) else None
        return Envelope(job, str(header["reply_to"]), budget_s)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, MalformedMessage):
            raise
        raise MalformedMessage(f"invalid job header: {exc!r}") from None


def encode_reply(job_id: str, outcome: Result | ServeError) -> bytes:
    if isinstance(outcome, ServeError):
        body: dict[str, Any] = {"code": outcome.code, "message": outcome.message}
        return json.dumps({"v": VERSION, "job_id": job_id, "error": body}).encode()
    result = {
        "model": outcome.model,
        "version": outcome.version,
        "predictions": [[p.index, p.label, p.score] for p in outcome.predictions],
        "queue_ms": outcome.queue_ms,
        "inference_ms": outcome.inference_ms,
        "batch_size": outcome.batch_size,
    }
    if outcome.scores is not None:  # little-endian float32, base64: exact and 5.3 kB
        scores = np.ascontiguousarray(outcome.scores, dtype="<f4").tobytes()
        result["scores"] = base64.b64encode(scores).decode()
    return json.dumps({"v": VERSION, "job_id": job_id, "result": result}).encode()


def decode_reply(data: bytes) -> tuple[str, Result | ServeError]:
    try:
        reply = json.loads(data)
        job_id = str(reply["job_id"])
        if "error" in reply:
            error = reply["error"]
            return job_id, error_for_code(str(error["code"]), str(error["message"]))
        r = reply["result"]
        predictions = [Prediction(int(i), str(label), float(s)) for i, label, s in r["predictions"]]
        return job_id, Result(
            model=str(r["model"]),
            version=str(r["version"]),
            predictions=predictions,
            queue_ms=float(r["queue_ms"]),
            inference_ms=float(r["inference_ms"]),
            batch_size=int(r["batch_size"]),
            scores=_scores(r.get("scores")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"unreadable reply: {exc!r}") from None


def _scores(encoded: object) -> np.ndarray | None:
    if encoded is None:
        return None
    if not isinstance(encoded, str):
        raise ValueError("scores must be base64 text")
    return np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<f4")


def encode_model_info(info: ModelInfo) -> bytes:
    # Optional fields travel only when set (random_weights when true, the INT8 figures
    # when recorded): gateways older than a field still read every other announcement,
    # and an fp32 worker's description stays byte for byte what they read.
    fields = {k: v for k, v in asdict(info).items() if v is not None}
    if not fields["random_weights"]:
        del fields["random_weights"]
    return json.dumps({"v": VERSION, **fields}).encode()


_MODEL_INFO_FIELDS = frozenset(ModelInfo.__dataclass_fields__)


def decode_model_info(data: bytes) -> ModelInfo:
    try:
        fields = json.loads(data)
        fields.pop("v")
        # Fields a newer worker adds are ignored, not an unreadable announcement.
        return ModelInfo(**{k: v for k, v in fields.items() if k in _MODEL_INFO_FIELDS})
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"unreadable model description: {exc!r}") from None

"""KServe v2's FP32 output across Redis: the job asks for the whole probability vector
and the reply carries it exactly; jobs that do not ask stay as small as before."""

from __future__ import annotations

import json

import numpy as np

from resnet_serve.shared.jobs import Job, Prediction, Result
from resnet_serve.shared.wire import HEADER, decode_job, decode_reply, encode_job, encode_reply


def job(full_scores: bool) -> Job:
    image = np.zeros((224, 224, 3), np.uint8)
    return Job("r", "resnet18", image, top_k=3, deadline=1e10, full_scores=full_scores)


def result(scores: np.ndarray | None) -> Result:
    top = [Prediction(1, "goldfish", 0.5)]
    return Result("resnet18", "1", top, queue_ms=1.0, inference_ms=2.0, batch_size=1, scores=scores)


def test_the_request_for_full_scores_travels_with_the_job() -> None:
    assert decode_job(encode_job(job(True), "reply")).job.full_scores
    plain = encode_job(job(False), "reply")
    assert "full_scores" not in json.loads(plain[HEADER])
    assert not decode_job(plain).job.full_scores


def test_scores_cross_exactly_and_only_when_present() -> None:
    scores = np.random.default_rng(0).random(1000, dtype=np.float32)
    _, decoded = decode_reply(encode_reply("j", result(scores)))
    assert isinstance(decoded, Result)
    assert decoded.scores is not None
    np.testing.assert_array_equal(decoded.scores, scores)
    _, plain = decode_reply(encode_reply("j", result(None)))
    assert isinstance(plain, Result)
    assert plain.scores is None

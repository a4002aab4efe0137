"""Model announcements stay readable across versions: the random-weights flag is written
only when set, and fields a newer worker adds are ignored by this gateway."""

from __future__ import annotations

import dataclasses
import json

from resnet_serve.shared.jobs import ModelInfo
from resnet_serve.shared.wire import decode_model_info, encode_model_info

INFO = ModelInfo(
    name="resnet18",
    version="1",
    engine="onnxruntime",
    precision="fp32",
    input_size=224,
    resize_size=256,
    num_classes=1000,
)


def test_pretrained_announcement_is_what_older_gateways_read() -> None:
    fields = json.loads(encode_model_info(INFO))
    assert "random_weights" not in fields
    assert decode_model_info(encode_model_info(INFO)) == INFO


def test_random_weights_round_trip() -> None:
    flagged = dataclasses.replace(INFO, random_weights=True)
    assert decode_model_info(encode_model_info(flagged)).random_weights is True


def test_fields_from_a_newer_worker_are_ignored() -> None:
    fields = json.loads(encode_model_info(INFO)) | {"added_later": [1, 2]}
    assert decode_model_info(json.dumps(fields).encode()) == INFO

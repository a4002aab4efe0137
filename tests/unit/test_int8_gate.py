"""The INT8 accuracy gate, the calibration split and the engine choice around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_serve.worker.engines.choice import choose_engine
from resnet_serve.worker.model.accuracy_gate import compare, wilson_lower
from resnet_serve.worker.model.calibration import load_calibration, photo_files, split_photos


def test_wilson_lower_bound_is_below_the_rate_and_tightens_with_more_trials() -> None:
    assert wilson_lower(300, 300) == pytest.approx(300 / (300 + 1.645**2))
    assert wilson_lower(99, 100) < 0.99
    assert wilson_lower(990, 1000) > wilson_lower(99, 100)
    assert wilson_lower(0, 0) == 0.0


def test_gate_judges_the_lower_bound_not_the_rate() -> None:
    rng = np.random.default_rng(0)
    reference = rng.random((400, 10))
    same = compare(reference, reference)
    assert same.top1_agreement == 1.0
    assert same.top5_containment == 1.0
    # 400/400 agree, yet 400 crops cannot show top-5 containment >= 99.5% at 95% confidence.
    assert same.top1_lower_bound >= same.top1_gate
    assert same.top5_lower_bound < same.top5_gate
    assert not same.passed
    assert compare(np.tile(reference, (3, 1)), np.tile(reference, (3, 1))).passed
    shuffled = compare(reference, rng.random((400, 10)))
    assert shuffled.top1_agreement < 0.5
    assert not shuffled.passed


def _photos(directory: Path, count: int) -> None:
    directory.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"photo{i:02d}.png")
    Image.new("RGB", (64, 64)).save(directory / "icon.png")  # too small to be a photo


def test_calibration_holds_out_whole_photos(tmp_path: Path) -> None:
    _photos(tmp_path / "photos", 9)
    files = photo_files(tmp_path / "photos")
    assert len(files) == 9
    fitted, held = split_photos(files)
    assert set(fitted).isdisjoint(held)
    assert sorted(fitted + held) == files
    assert len(held) == 3
    data = load_calibration(tmp_path / "photos", size=32, calibration_crops=20, holdout_crops=30)
    assert data.calibration.shape == (20, 32, 32, 3)
    assert data.holdout.shape == (30, 32, 32, 3)
    assert data.calibration.dtype == np.uint8
    assert (data.photos, data.holdout_photos) == (9, 3)
    again = load_calibration(tmp_path / "photos", size=32, calibration_crops=20, holdout_crops=30)
    assert again.digest == data.digest
    assert np.array_equal(again.holdout, data.holdout)


def test_the_default_calibration_set_is_scikit_image_photos() -> None:
    files = photo_files(None)
    assert any(f.name == "chelsea.png" for f in files)
    assert len(files) >= 12


def test_auto_picks_int8_only_past_its_gate() -> None:
    assert choose_engine("auto", "auto", int8_passed=True).precision in {"int8", "fp16"}
    # (fp16 only where a CUDA device is present)
    assert choose_engine("auto", "int8").engine == "openvino"
    assert choose_engine("openvino", "auto").precision == "int8"
    with pytest.raises(ValueError, match="int8"):
        choose_engine("onnxruntime", "int8")
    with pytest.raises(ValueError, match="int8"):
        choose_engine("openvino", "fp32")


def test_model_info_grows_without_breaking_older_readers() -> None:
    import json

    from resnet_serve.shared.jobs import ModelInfo
    from resnet_serve.shared.wire import decode_model_info, encode_model_info

    fp32 = ModelInfo("resnet18", "1", "onnxruntime", "fp32", 224, 256, 1000)
    assert set(json.loads(encode_model_info(fp32))) == {
        "v",
        "name",
        "version",
        "engine",
        "precision",
        "input_size",
        "resize_size",
        "num_classes",
    }
    int8 = ModelInfo("resnet18", "1", "openvino", "int8", 224, 256, 1000, 0.99, 0.98, 1.0, True)
    assert decode_model_info(encode_model_info(int8)) == int8
    newer = json.loads(encode_model_info(int8)) | {"a_field_from_the_future": 1}
    assert decode_model_info(json.dumps(newer).encode()) == int8


def test_an_artifact_is_intact_only_with_every_file_it_recorded(tmp_path: Path) -> None:
    from resnet_serve.worker.model.artifacts import ArtifactEntry, sha256_file

    (tmp_path / "model.int8.xml").write_text("<net/>")
    (tmp_path / "model.int8.bin").write_bytes(b"\0" * 64)
    entry = ArtifactEntry(
        backend="openvino",
        precision="int8",
        device="cpu",
        file="model.int8.xml",
        sha256=sha256_file(tmp_path / "model.int8.xml"),
        extra_files={"model.int8.bin": sha256_file(tmp_path / "model.int8.bin")},
        max_batch=8,
    )
    assert entry.intact(tmp_path)
    (tmp_path / "model.int8.bin").write_bytes(b"\1" * 64)  # weights corrupted: rebuilt
    assert not entry.intact(tmp_path)
    (tmp_path / "model.int8.bin").unlink()
    assert not entry.intact(tmp_path)

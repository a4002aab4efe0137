"""The INT8 calibration split, its labels, and the engine choice around the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_serve.worker.engines.choice import choose_engine
from resnet_serve.worker.model.artifacts import BuildError
from resnet_serve.worker.model.calibration import (
    SHIPPED_PHOTOS,
    load_calibration,
    photo_files,
    split_photos,
)


def _photos(directory: Path, count: int, seed: int = 1) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"photo{seed:02d}-{i:02d}.png")
    Image.new("RGB", (64, 64)).save(directory / "icon.png")  # too small to be a photo


def test_default_photos_are_the_shipped_ones_each_with_its_licence() -> None:
    """The default set is the package's own photos whatever else is installed, so
    `export` and a `cpu-worker` re-gating on another CPU judge on the same photos; and
    every one of them has its author and licence in SOURCES.md (and only they do)."""
    files = photo_files(None)
    assert all(f.parent == SHIPPED_PHOTOS for f in files)
    assert len(files) >= 30
    table = (SHIPPED_PHOTOS / "SOURCES.md").read_text().splitlines()
    listed = {row.split("|")[1].strip() for row in table if row.startswith("| ") and ".jpg" in row}
    assert listed == {f.name for f in files}
    held = split_photos(files)[1]
    assert len(held) == len(files) // 3


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
    # Each held-out crop knows its photo: the gate's bound is taken over photos.
    assert data.holdout_owner.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert data.holdout_labels is None  # photos not in class folders: no labels


def test_class_folders_label_the_held_out_crops(tmp_path: Path) -> None:
    labels = ["tench", "goldfish", "Egyptian cat"]
    for i, folder in enumerate(["tench", "Egyptian_cat", "goldfish"] * 2):
        _photos(tmp_path / "photos" / folder, 1, seed=i)
    data = load_calibration(
        tmp_path / "photos", size=32, calibration_crops=8, holdout_crops=20, labels=labels
    )
    held = split_photos(photo_files(tmp_path / "photos"))[1]
    expected = [labels.index(f.parent.name.replace("_", " ")) for f in held]
    assert data.holdout_labels is not None
    assert data.holdout_labels.tolist() == [expected[o] for o in data.holdout_owner]


def test_imagenet_wordnet_id_folders_label_the_held_out_crops(tmp_path: Path) -> None:
    """ImageNet's own layout: folders named by WordNet id, in class-index order."""
    labels = [f"class {i}" for i in range(1000)]
    labels[0], labels[285] = "tench", "Egyptian cat"
    folders = {"n01440764": 0, "n02124075": 285}  # tench, Egyptian cat
    for i, folder in enumerate(list(folders) * 3):
        _photos(tmp_path / "photos" / folder, 1, seed=i)
    data = load_calibration(
        tmp_path / "photos", size=32, calibration_crops=8, holdout_crops=20, labels=labels
    )
    held = split_photos(photo_files(tmp_path / "photos"))[1]
    assert data.holdout_labels is not None
    expected = [folders[f.parent.name] for f in held]
    assert data.holdout_labels.tolist() == [expected[o] for o in data.holdout_owner]


def test_a_class_folder_naming_no_class_is_refused(tmp_path: Path) -> None:
    for i, folder in enumerate(["tench", "not a class", "tench", "tench", "tench"]):
        _photos(tmp_path / "photos" / folder, 1, seed=i)
    with pytest.raises(BuildError, match="not a class"):
        load_calibration(
            tmp_path / "photos", size=32, calibration_crops=8, holdout_crops=20, labels=["tench"]
        )


def test_auto_picks_int8_only_past_its_gate() -> None:
    assert choose_engine("auto", "auto", int8_passed=True).precision in {"int8", "fp16"}
    # (fp16 only where a CUDA device is present)
    assert choose_engine("auto", "int8").engine == "openvino"
    assert choose_engine("openvino", "auto").precision == "int8"
    with pytest.raises(ValueError, match="int8"):
        choose_engine("onnxruntime", "int8")
    # OpenVINO also runs the fp32 ONNX artifact, in f32 or bf16.
    assert choose_engine("openvino", "fp32").precision == "fp32"
    assert choose_engine("openvino", "bf16").precision == "bf16"


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
    int8 = ModelInfo(
        *("resnet18", "1", "openvino", "int8", 224, 256, 1000),
        top1_agreement=0.9,
        top5_containment=0.998,
        accuracy_gate_passed=True,
        top1_drop_pt=0.2,
        top1_drop_bound_pt=0.31,
    )
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

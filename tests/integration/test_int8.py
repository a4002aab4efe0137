"""The INT8 engine end to end: `export --precision int8`, its manifest entry, the
engine choice, and the running service answering with the INT8 engine's answers."""

from __future__ import annotations

import warnings
from pathlib import Path

import httpx
import numpy as np

from resnet_serve.shared.preprocess import PreprocessConfig, preprocess
from resnet_serve.shared.settings import load_settings
from resnet_serve.worker.engines.registry import open_engine
from resnet_serve.worker.model.artifacts import ModelRepository, sha256_file
from resnet_serve.worker.model.loading import choose
from tests.images import jpeg
from tests.servers import run_server

INT8_KEY = "openvino-int8-cpu"


def _int8_version(home: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    found = ModelRepository(home / "models").find("resnet18", "random")
    assert found is not None
    directory, manifest = found
    return directory, manifest.model_dump()


def test_export_records_backend_digests_calibration_and_accuracy(
    resnet_int8_artifact: str, home: Path
) -> None:
    directory, manifest = _int8_version(home)
    entry = manifest["artifacts"][INT8_KEY]
    assert (entry["backend"], entry["precision"], entry["device"]) == ("openvino", "int8", "cpu")
    assert entry["sha256"] == sha256_file(directory / entry["file"])
    ((bin_name, bin_sha),) = entry["extra_files"].items()
    assert bin_sha == sha256_file(directory / bin_name)
    calibration = entry["calibration"]
    assert len(calibration["digest"]) == 64
    assert calibration["calibration_crops"] == 16
    assert calibration["holdout_crops"] == 300
    assert 0 < calibration["holdout_photos"] < calibration["photos"]
    accuracy = entry["accuracy"]
    assert accuracy["crops"] == 300
    assert accuracy["photos"] == calibration["holdout_photos"]
    assert accuracy["labelled"] is False  # the shipped photos carry no labels
    assert 0 <= accuracy["drop_pt"] <= accuracy["drop_upper_pt"]
    assert accuracy["max_drop_pt"] == 1.0
    assert accuracy["passed"] is False  # random weights never pass
    assert accuracy["reason"] == "random weights never pass"
    assert calibration["search_s"] == 0  # and no accuracy search is spent on them
    assert "top-1 accuracy drop" in resnet_int8_artifact
    assert "random weights never pass" in resnet_int8_artifact
    assert "onnx-fp32-any" in manifest["artifacts"]  # the fp32 source it was quantised from


def test_auto_never_serves_int8_that_did_not_pass_its_gate(
    resnet_int8_artifact: str, home: Path
) -> None:
    settings = load_settings(home_dir=home, weights="random", offline=True)
    assert choose(settings).precision != "int8"
    assert choose(settings.model_copy(update={"precision": "int8"})).engine == "openvino"


def _engine_scores(home: Path, key: str, pixels: np.ndarray) -> np.ndarray:
    directory, manifest = _int8_version(home)
    entry = manifest["artifacts"][key]
    engine = open_engine(
        directory / entry["file"],
        backend=entry["backend"],
        precision=entry["precision"],
        device="cpu",
        threads=1,
    )
    try:
        return engine.infer(pixels)
    finally:
        engine.close()


def test_the_service_serves_int8_answers_and_says_so(
    resnet_int8_artifact: str, home: Path, logs: Path
) -> None:
    data = jpeg("chelsea")
    pixels = preprocess(data, PreprocessConfig())[None]
    int8 = _engine_scores(home, INT8_KEY, pixels)[0]
    fp32 = _engine_scores(home, "onnx-fp32-any", pixels)[0]
    with run_server(
        home, logs, "--weights", "random", "--engine", "openvino", "--precision", "int8"
    ) as server:
        (model,) = httpx.get(f"{server.url}/v1/models", timeout=10).json()
        assert (model["engine"], model["precision"]) == ("openvino", "int8")
        assert 0 <= model["top1_agreement"] <= 1
        assert model["accuracy_gate_passed"] is False
        meta = httpx.get(f"{server.url}/v2/models/resnet18", timeout=10).json()
        assert meta["precision"] == "int8"
        assert meta["top1_agreement"] == model["top1_agreement"]
        assert meta["top1_drop_bound_pt"] == model["top1_drop_bound_pt"] >= model["top1_drop_pt"]
        assert "openvino int8, top-1 accuracy vs fp32" in server.log()
        assert "accuracy gate: random weights never pass" in server.log()

        body = {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": list(pixels.shape),
                    "datatype": "UINT8",
                    "data": pixels.ravel().tolist(),
                }
            ],
            "outputs": [{"name": "probabilities"}],
        }
        response = httpx.post(f"{server.url}/v2/models/resnet18/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        served = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32)
        np.testing.assert_allclose(served, int8, rtol=1e-5, atol=1e-8)
        assert np.abs(served - int8).max() < np.abs(served - fp32).max()

        response = httpx.post(
            f"{server.url}/v1/classify",
            params={"top_k": 3},
            content=data,
            headers={"content-type": "image/jpeg"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        top = response.json()["predictions"]
        assert [p["index"] for p in top] == list(np.argsort(-int8)[:3])
        assert (
            top[0]["score"] == float(np.float32(int8.max()))
            or abs(top[0]["score"] - float(int8.max())) < 1e-6
        )
        assert "libtorch" not in Path(f"/proc/{server.process.pid}/maps").read_text()


def test_a_first_start_builds_in_a_child_and_never_holds_torch(tmp_path: Path, logs: Path) -> None:
    with run_server(
        tmp_path / "home", logs, "--weights", "random", "--engine", "onnxruntime"
    ) as server:
        assert "building it in a child process" in server.log()
        assert "libtorch" not in Path(f"/proc/{server.process.pid}/maps").read_text()
        assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 200


def _tiny_classifier(path: Path) -> None:
    """A small real convolutional classifier, uint8 NHWC in, probabilities out."""
    import torch

    torch.manual_seed(0)
    # Its answer follows the crop's colour, so colours near a class boundary are
    # near-ties that quantisation flips.
    body = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 10, 1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            pixels = images.permute(0, 3, 1, 2).float() / 255
            return torch.softmax(20 * self.body(pixels), dim=1)

    # The exporter the product uses (worker/model/export.py), deprecated but verified.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Classifier().eval(),
            (torch.zeros(1, 32, 32, 3, dtype=torch.uint8),),
            str(path),
            input_names=["images"],
            dynamic_axes={"images": {0: "batch"}},
            dynamo=False,
        )


def test_the_accuracy_search_stops_at_its_budget_and_keeps_plain_int8(tmp_path: Path) -> None:
    """NNCF's search has no clock of its own: past `accuracy_search_budget_s` it is
    stopped at its next evaluation, plain INT8 is kept with its failed verdict, and
    what it did is said (a tiny real model, so the test takes seconds)."""
    from resnet_serve.worker.model.calibration import CalibrationSet
    from resnet_serve.worker.model.quantize import build_int8
    from resnet_serve.worker.model.search_clock import SearchClock

    _tiny_classifier(tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    # Each crop one colour plus noise: varied answers, many of them near-ties.
    colours = rng.integers(0, 256, (360, 1, 1, 3))
    noise = rng.integers(-20, 21, (360, 32, 32, 3))
    crops = np.clip(colours + noise, 0, 255).astype(np.uint8)
    data = CalibrationSet(
        calibration=crops[:32],
        tuning=crops[32:60],
        holdout=crops[60:],
        holdout_owner=np.repeat(np.arange(6), 50),
        holdout_labels=None,
        digest="0" * 64,
        source="random pixels",
        photos=18,
        holdout_photos=6,
    )
    said: list[str] = []
    result = build_int8(
        tmp_path / "model.onnx",
        tmp_path,
        data,
        random_weights=False,
        max_drop_pt=1e-6,  # no quantisation meets it: the search must run
        max_iterations=50,
        clock=SearchClock(0.001, said.append, every_s=0),
    )
    assert not result.accuracy.passed
    assert result.calibration.method == "ptq"
    assert result.calibration.search_stopped
    assert result.calibration.search_s > 0
    assert said[1] == (
        "    accuracy search: up to 0.001 s (first and last layers in fp32, then NNCF)"
    )
    assert said[2].startswith("    first and last layers in fp32 (")
    assert "failed:\n      " in said[2]
    assert said[-1].startswith("    accuracy search: ")
    assert (tmp_path / "model.int8.xml").is_file()
    assert (tmp_path / "model.int8.bin").is_file()

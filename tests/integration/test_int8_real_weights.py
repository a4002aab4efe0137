"""EfficientNet-Lite0 with its real ImageNet weights: INT8 against fp32 on the real
photos the project ships (crops and flips), judged by the accuracy gate; `--precision
auto` follows the recorded verdict. One export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_serve.shared.settings import load_settings
from resnet_serve.worker.engines.registry import open_engine
from resnet_serve.worker.model.accuracy_gate import (
    MIN_CONFIDENT_CROPS,
    MIN_PHOTOS,
    TOP5_GATE,
    judge,
)
from resnet_serve.worker.model.artifacts import ArtifactEntry, ModelRepository
from resnet_serve.worker.model.calibration import crop_owners, crop_views, photo_files
from resnet_serve.worker.model.loading import choose
from resnet_serve.worker.model.selection import ROUNDS, cache_path
from resnet_serve.worker.model.selection import recorded as recorded_selection
from tests.servers import server_env

MODEL = "efficientnet_lite0"
VIEWS = 600


@pytest.fixture(scope="module")
def lite_int8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("lite-int8")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "resnet_serve", "export", "--model", MODEL),
            *("--engine", "openvino", "--precision", "int8"),
        ],
        env=server_env(home),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return home, done.stderr


def _scores(directory: Path, entry: ArtifactEntry, views: np.ndarray) -> np.ndarray:
    engine = open_engine(
        directory / entry.file,
        backend=entry.backend,
        precision=entry.precision,
        device="cpu",
        threads=0,
    )
    try:
        return np.concatenate([engine.infer(views[i : i + 8]) for i in range(0, len(views), 8)])
    finally:
        engine.close()


# One real export (setup) and a first start that gates and times every candidate (call):
# 166 s in all on an AVX2-only EPYC (2026-12-07), 103 s on a VNNI one.
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lite0_int8_passes_its_gate_on_real_photos_and_auto_serves_it(
    lite_int8: tuple[Path, str],
) -> None:
    home, printed = lite_int8
    ((directory, manifest),) = ModelRepository(home / "models").versions(MODEL)
    assert manifest.weights.source == "file"
    entry = manifest.artifacts["openvino-int8-cpu"]
    recorded, calibration = entry.accuracy, entry.calibration
    assert recorded is not None
    assert calibration is not None
    assert recorded.crops >= 300
    assert recorded.photos == calibration.holdout_photos >= MIN_PHOTOS
    # Real weights, real photos (the defaults: 1,200 crops of 13 of the 39 shipped
    # photos, held out): plain post-training quantisation fails (95% bound 1.17 pt on an
    # AMD EPYC with VNNI, 1.23 pt on one with AVX2 only), and the search's first step,
    # the first and last layers (stem and classifier) in fp32, passes (AVX2, 2026-12-07:
    # 0.56 pt, bound 0.75 pt; NNCF's ranking kept the same two on the VNNI EPYC: 0.66,
    # bound 0.88). (Measured on 1,000 real ImageNet photos outside the repository, the
    # artifact with those two in fp32 costs 0.5 pt.)
    assert recorded.passed, recorded.reason
    assert recorded.drop_upper_pt <= recorded.max_drop_pt == 1.0
    assert recorded.confident_crops >= MIN_CONFIDENT_CROPS
    assert recorded.top5_containment >= TOP5_GATE
    assert f"top-1 accuracy drop {recorded.drop_pt:.2f} pt" in printed
    assert "gate passed" in printed
    searched = "plain INT8 failed the gate" in printed
    assert calibration.method in (("first-last-fp32", "accuracy-control") if searched else ("ptq",))
    if calibration.method == "first-last-fp32":
        assert any("_conv_stem" in name for name in calibration.fp32_layers)
    assert (calibration.search_s > 0) == searched

    # Independently: new crops and flips of every photo, fitted or held out.
    files = photo_files(None)
    assert len(files) == calibration.photos  # the photos export judged on
    views = crop_views([Image.open(f).convert("RGB") for f in files], VIEWS, 224, seed=7)
    fp32 = _scores(directory, manifest.artifacts["onnx-fp32-any"], views)
    int8 = _scores(directory, entry, views)
    seen = judge(fp32, int8, crop_owners(len(files), VIEWS), max_drop_pt=1.0, random_weights=False)
    # What the gate promised holds on views it never judged: under a point estimated,
    # the fp32 answer nearly always in INT8's top 5. (Without the overflow fix, 8-bit
    # weights saturate on CPUs without VNNI: about 66% agreement, 95.8% top-5 there.)
    assert seen.drop_pt <= 1.0
    assert seen.top5_containment >= 0.97
    assert seen.confident_agreement >= 0.97

    # `auto` on a CPU export recorded no measurement for (only INT8 was asked for):
    # the start measures here, in a child, re-gates INT8 on this CPU, times every
    # candidate, keeps the result under the home directory and serves its pick. It
    # judges the held-out crops export judged (the same shipped photos and defaults), so
    # the verdict is export's: with 600 crops instead the bound read 1.08 pt and failed.
    settings = load_settings(home_dir=home, model=MODEL, offline=True)
    choice = choose(settings)
    selection = recorded_selection(settings, manifest)
    assert selection is not None
    assert cache_path(settings, manifest, selection.cpu).is_file()
    assert {c.key for c in selection.candidates} >= {"onnx-fp32-any", "openvino-int8-cpu"}
    int8_here = next(c for c in selection.candidates if c.key == "openvino-int8-cpu")
    assert int8_here.passed, int8_here.reason
    assert all(len(c.img_s) == ROUNDS for c in selection.candidates if c.passed)
    assert (choice.engine, choice.precision) == (
        selection.choice.engine,
        selection.choice.precision,
    )
    assert choice.reason.endswith(selection.reason)
    assert choose(settings) == choice  # the next start reuses it: no flip-flop

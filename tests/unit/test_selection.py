"""`auto` by measurement: the fastest candidate that passed its gate, ties to the smaller
accuracy cost, and what this CPU is, read from the machine (never assumed)."""

from __future__ import annotations

from pathlib import Path

from resnet_serve.worker.model.artifacts import (
    ArtifactEntry,
    Candidate,
    Manifest,
    WeightsInfo,
)
from resnet_serve.worker.model.selection import (
    FP32_KEY,
    candidate_keys,
    entry_for,
    fingerprint,
    pick,
)


def candidate(key: str, img_s: list[float], drop_pt: float = 0.0, passed: bool = True) -> Candidate:
    backend, precision, _ = key.split("-")
    engine = "onnxruntime" if backend == "onnx" else backend
    reason = "passed" if passed else "top-1 drop bound 2.00 pt > 1 pt"
    return Candidate(
        key=key,
        engine=engine,
        precision=precision,
        passed=passed,
        reason=reason,
        drop_pt=drop_pt,
        img_s=img_s if passed else [],
    )


def test_the_fastest_in_every_round_wins_and_the_line_says_by_how_much() -> None:
    fp32 = candidate(FP32_KEY, [124, 143, 145, 105, 91])
    int8 = candidate("openvino-int8-cpu", [201, 197, 249, 138, 136], drop_pt=0.27)
    chosen, reason = pick([fp32, int8])
    assert chosen is int8  # its rounds overlap fp32's range, but it won every round
    assert reason == (
        "openvino int8 197 img/s, 1.59x onnxruntime fp32; over onnxruntime fp32 124 img/s; "
        "estimated accuracy cost 0.27 pt"
    )


def test_within_ten_percent_the_smaller_accuracy_cost_wins() -> None:
    fp32 = candidate(FP32_KEY, [100, 100, 100])
    bf16 = candidate("openvino-bf16-cpu", [108, 109, 107], drop_pt=0.1)
    chosen, reason = pick([bf16, fp32])
    assert chosen is fp32
    assert "a tie with faster ones, won on accuracy" in reason


def test_as_fast_in_one_round_is_a_tie() -> None:
    fp32 = candidate(FP32_KEY, [100, 150, 100])
    int8 = candidate("openvino-int8-cpu", [140, 140, 140], drop_pt=0.2)
    assert pick([fp32, int8])[0] is fp32


def test_a_candidate_that_failed_its_gate_is_never_chosen_and_the_line_says_why() -> None:
    fp32 = candidate(FP32_KEY, [100, 100, 100])
    int8 = candidate("openvino-int8-cpu", [], passed=False)
    chosen, reason = pick([fp32, int8])
    assert chosen is fp32
    assert reason.endswith("openvino int8 not passed: top-1 drop bound 2.00 pt > 1 pt")


def _manifest(*keys: str) -> Manifest:
    entries = {
        key: ArtifactEntry(
            backend=key.split("-")[0],  # type: ignore[arg-type]
            precision=key.split("-")[1],  # type: ignore[arg-type]
            device=key.split("-")[2],  # type: ignore[arg-type]
            file="model.onnx" if key == FP32_KEY else "model.int8.xml",
            sha256="0" * 64,
            max_batch=8,
        )
        for key in keys
    }
    return Manifest(
        name="m",
        version="1",
        input_size=224,
        resize_size=256,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        labels=["a"],
        weights=WeightsInfo(source="random"),
        artifacts=entries,
    )


def test_openvino_runs_the_fp32_onnx_file_in_f32_and_bf16() -> None:
    manifest = _manifest(FP32_KEY)
    for precision in ("fp32", "bf16"):
        entry = entry_for(manifest, f"openvino-{precision}-cpu")
        assert entry is not None
        assert (entry.backend, entry.precision, entry.file) == ("openvino", precision, "model.onnx")
    assert entry_for(manifest, "openvino-int8-cpu") is None  # INT8 is built, not derived


def test_bf16_is_a_candidate_only_on_a_cpu_with_native_bf16() -> None:
    manifest = _manifest(FP32_KEY, "openvino-int8-cpu")
    here = fingerprint()
    keys = candidate_keys(manifest, here)
    assert keys[0] == FP32_KEY
    assert "openvino-int8-cpu" in keys
    assert ("openvino-bf16-cpu" in keys) == here.native_bf16
    native = here.model_copy(update={"flags": ["avx2", "avx512_bf16"]})
    assert "openvino-bf16-cpu" in candidate_keys(manifest, native)


def test_this_cpu_is_read_from_the_machine() -> None:
    flags = next(
        line.split(":", 1)[1].split()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("flags")
    )
    here = fingerprint(2)
    assert here.cores == 2
    assert set(here.flags) <= set(flags)
    assert ("avx2" in here.flags) == ("avx2" in flags)
    assert here.native_bf16 == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert here.digest == fingerprint(2).digest != fingerprint(1).digest

"""`--engine auto` and `--precision auto` follow the machine; impossible pairs are refused."""

from __future__ import annotations

import pytest

from resnet_serve.worker.engines import choice


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return monkeypatch


def on(machine: pytest.MonkeyPatch, *, cuda: bool, bf16: bool) -> None:
    machine.setattr(choice, "cuda_present", lambda: cuda)
    machine.setattr(choice, "cpu_has_native_bf16", lambda: bf16)


@pytest.mark.parametrize(
    ("cuda", "bf16", "expected"),
    [
        (False, False, ("onnxruntime", "fp32", "cpu")),
        # Native bf16 alone never picks bf16: no gate has judged it.
        (False, True, ("onnxruntime", "fp32", "cpu")),
        (True, False, ("torchscript", "fp16", "cuda")),
        (True, True, ("torchscript", "fp16", "cuda")),
    ],
)
def test_auto_follows_the_machine(
    machine: pytest.MonkeyPatch, cuda: bool, bf16: bool, expected: tuple[str, str, str]
) -> None:
    on(machine, cuda=cuda, bf16=bf16)
    picked = choice.choose_engine("auto", "auto")
    assert (picked.engine, picked.precision, picked.device) == expected


@pytest.mark.parametrize("bf16", [False, True])
def test_auto_serves_int8_on_a_cpu_only_past_its_gate(
    machine: pytest.MonkeyPatch, bf16: bool
) -> None:
    on(machine, cuda=False, bf16=bf16)
    passed = choice.choose_engine("auto", "auto", int8_passed=True)
    assert (passed.engine, passed.precision, passed.device) == ("openvino", "int8", "cpu")
    failed = choice.choose_engine("auto", "auto", int8_passed=False)
    assert (failed.engine, failed.precision) == ("onnxruntime", "fp32")


@pytest.mark.parametrize(("openvino", "engine"), [(True, "openvino"), (False, "torchscript")])
def test_bf16_on_a_cpu_only_when_asked_for(
    machine: pytest.MonkeyPatch, openvino: bool, engine: str
) -> None:
    """OpenVINO runs bf16 without torch in the process; TorchScript only without it."""
    on(machine, cuda=False, bf16=True)
    machine.setattr(choice, "openvino_installed", lambda: openvino)
    picked = choice.choose_engine("auto", "bf16")
    assert (picked.engine, picked.precision, picked.device) == (engine, "bf16", "cpu")
    assert (choice.choose_engine("torchscript", "auto").precision) == "fp32"


def test_explicit_onnxruntime_is_fp32_anywhere(machine: pytest.MonkeyPatch) -> None:
    on(machine, cuda=False, bf16=True)
    picked = choice.choose_engine("onnxruntime", "auto")
    assert (picked.engine, picked.precision, picked.backend) == ("onnxruntime", "fp32", "onnx")


@pytest.mark.parametrize(("engine", "precision"), [("auto", "fp16"), ("onnxruntime", "bf16")])
def test_impossible_pairs_are_refused(
    machine: pytest.MonkeyPatch, engine: str, precision: str
) -> None:
    on(machine, cuda=False, bf16=False)
    with pytest.raises(ValueError, match=r"fp16|fp32"):
        choice.choose_engine(engine, precision)


def test_this_machine_reads_its_own_flags() -> None:
    """No assumption about the CPU here: whatever /proc/cpuinfo says decides."""
    with open("/proc/cpuinfo") as cpuinfo:
        flags = cpuinfo.read()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert choice.cpu_has_native_bf16() is native

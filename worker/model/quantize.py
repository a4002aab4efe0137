"""fp32 ONNX artifact -> OpenVINO INT8 (NNCF post-training quantisation), judged by the
accuracy gate against fp32 on held-out photos. Needs openvino and nncf, never torch."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_serve.worker.model.accuracy_gate import enough_evidence, judge
from resnet_serve.worker.model.artifacts import Accuracy, Calibration
from resnet_serve.worker.model.calibration import CalibrationSet
from resnet_serve.worker.model.search_clock import SearchClock, SearchOverBudget

log = logging.getLogger(__name__)

_BATCH = 8
_WEIGHTED = frozenset({"Convolution", "GroupConvolution", "MatMul"})


@dataclass(frozen=True, slots=True)
class Int8Result:
    files: list[str]  # the .xml first, then its .bin
    calibration: Calibration
    accuracy: Accuracy


def _scores(compiled: Any, images: np.ndarray) -> np.ndarray:
    out = [
        np.asarray(compiled(images[i : i + _BATCH])[0], dtype=np.float32)
        for i in range(0, len(images), _BATCH)
    ]
    return np.concatenate(out)


def _quantisation_parameters() -> Any:
    """Weights quantised to a 7-bit range on every layer (NNCF's overflow fix), so one
    artifact is right on every x86 CPU: without VNNI, the u8 x s8 multiply-add saturates
    on 8-bit weights (EfficientNet-Lite0 on an AVX2-only EPYC: top-1 agreement with fp32
    65.7% without the fix, 89.5% with it, on the same held-out crops)."""
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    return AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)


def _quantise(fp32: Any, dataset: Any, size: int, keep_fp32: list[str] | None = None) -> Any:
    """Post-training quantisation on `size` calibration crops; `keep_fp32` names the
    layers left unquantised."""
    import nncf
    from nncf.scopes import IgnoredScope

    return nncf.quantize(
        fp32,
        dataset,
        subset_size=size,
        advanced_parameters=_quantisation_parameters(),
        ignored_scope=IgnoredScope(names=keep_fp32) if keep_fp32 else None,
    )


def _edge_layers(model: Any) -> list[str]:
    """The first and the last convolution or matmul: the one that sees raw pixels and
    the one that makes the logits, the layers post-training quantisation hurts most."""
    ops = model.get_ordered_ops()
    layers = [op.get_friendly_name() for op in ops if op.get_type_name() in _WEIGHTED]
    return [layers[0], layers[-1]] if len(layers) > 1 else layers


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """That logger's INFO lines held back for the block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _compile(model: Any, threads: int) -> Any:
    import openvino as ov

    # f32, not the CPU plugin's default bf16 where the CPU has it: the reference must be
    # fp32, and the INT8 graph's unquantised layers must run as the engine runs them.
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config.update(INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1)
    return ov.Core().compile_model(model, "CPU", config)


def _accuracy_control(
    fp32: Any,
    dataset: Any,
    data: CalibrationSet,
    reference: np.ndarray,
    max_drop_pt: float,
    max_iterations: int,
    clock: SearchClock,
) -> Any:
    """NNCF returns layers to fp32, most sensitive first, until the top-1 accuracy the
    gate estimates on the tuning crops (photos also used for calibration, never the
    held-out ones) drops by at most half the allowance: the gate judges a bound, on
    other photos. Raises SearchOverBudget when `clock` runs out."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    items = [(data.tuning[i : i + 1], reference[i]) for i in range(len(data.tuning))]

    def validate(
        compiled: Any, batches: Iterable[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[float, list[float]]:
        """Per crop, fp32's probability of the class the candidate answers, relative to
        fp32's own answer: 1 where they agree, lower the more a flip costs."""
        clock.tick()
        kept = [float(1 - p[p.argmax()] + p[compiled(x)[0].argmax()]) for x, p in batches]
        return float(np.mean(kept)), kept

    return nncf.quantize_with_accuracy_control(
        fp32,
        dataset,
        nncf.Dataset(items, lambda item: item[0]),
        validate,
        max_drop=max_drop_pt / 100 / 2,
        subset_size=len(data.calibration),
        advanced_quantization_parameters=_quantisation_parameters(),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=max_iterations, ranking_subset_size=min(100, len(items))
        ),
    )


def _fp32_layers(model: Any) -> list[str]:
    """Convolutions and matmuls whose inputs are not fed by a FakeQuantize."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in _WEIGHTED:
            continue
        feeds = {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
        if "FakeQuantize" not in feeds and "Convert" not in feeds:
            names.append(op.get_friendly_name())
    return names


def _search(
    fp32: Any,
    dataset: Any,
    data: CalibrationSet,
    tuning: np.ndarray,
    max_drop_pt: float,
    max_iterations: int,
    clock: SearchClock,
) -> Any | None:
    """NNCF's accuracy-controlled model, or None when the search ran past its budget."""
    try:
        return _accuracy_control(fp32, dataset, data, tuning, max_drop_pt, max_iterations, clock)
    except SearchOverBudget as stop:
        log.warning("INT8 accuracy search %s: keeping plain INT8", stop)
        return None


def _searched(
    fp32: Any,
    dataset: Any,
    data: CalibrationSet,
    judged: Callable[[Any], Accuracy],
    max_drop_pt: float,
    max_iterations: int,
    clock: SearchClock,
    threads: int,
) -> tuple[Any, Accuracy, str] | None:
    """(model, its verdict, method) of the accuracy search, cheapest step first: the
    first and last layers in fp32 (one more quantisation, no ranking), then NNCF's
    ranked search; None when that ran past the clock's budget. (EfficientNet-Lite0:
    NNCF's ranking kept exactly these two in fp32 on a VNNI EPYC; on an AVX2 one it
    returned plain INT8 unchanged, where these two alone passed.)"""
    with _quiet("nncf"):  # a line per node it leaves alone, unprefixed
        edges = _quantise(fp32, dataset, len(data.calibration), _edge_layers(fp32))
    accuracy = judged(edges)
    clock.note("first and last layers in fp32", accuracy.reason, accuracy.passed)
    if accuracy.passed:
        return edges, accuracy, "first-last-fp32"
    tuning = _scores(_compile(fp32, threads), data.tuning)
    found = _search(fp32, dataset, data, tuning, max_drop_pt, max_iterations, clock)
    return None if found is None else (found, judged(found), "accuracy-control")


def build_int8(
    onnx_path: Path,
    directory: Path,
    data: CalibrationSet,
    *,
    random_weights: bool,
    max_drop_pt: float,
    max_iterations: int,
    clock: SearchClock,
    threads: int = 0,
) -> Int8Result:
    """Quantise, judge on the held-out crops, and write `model.int8.xml`/`.bin`. When
    plain INT8 fails the gate, the accuracy search runs for at most `clock`'s budget;
    past it, the plain INT8 model is kept, its failed verdict recorded."""
    import nncf
    import openvino as ov

    fp32 = ov.convert_model(str(onnx_path))
    reference = _scores(_compile(fp32, threads), data.holdout)
    dataset = nncf.Dataset([data.calibration[i : i + 1] for i in range(len(data.calibration))])
    int8 = _quantise(fp32, dataset, len(data.calibration))

    def judged(model: Any) -> Accuracy:
        return judge(
            reference,
            _scores(_compile(model, threads), data.holdout),
            data.holdout_owner,
            labels=data.holdout_labels,
            max_drop_pt=max_drop_pt,
            random_weights=random_weights,
        )

    accuracy = judged(int8)
    method, searched, stopped = "ptq", False, False
    log.info("INT8 (plain PTQ): %s", accuracy.reason)
    # Random weights never pass (their answers carry no signal) and no search can add
    # evidence: none is spent on either.
    searching = not random_weights and max_iterations > 0 and clock.budget_s > 0
    if not accuracy.passed and searching and enough_evidence(accuracy):
        clock.start(f"plain INT8 failed the gate: {accuracy.reason}")
        searched = True
        found = _searched(fp32, dataset, data, judged, max_drop_pt, max_iterations, clock, threads)
        stopped = found is None
        if found is not None:
            int8, accuracy, method = found
    xml = directory / "model.int8.xml"
    ov.save_model(int8, str(xml), compress_to_fp16=False)
    fp32_layers = _fp32_layers(int8) if method != "ptq" else []
    search_s = round(clock.elapsed_s, 1) if searched else 0.0
    calibration = _record(data, method, fp32_layers, search_s, stopped)
    return Int8Result([xml.name, xml.with_suffix(".bin").name], calibration, accuracy)


def _record(
    data: CalibrationSet, method: str, fp32_layers: list[str], search_s: float, stopped: bool
) -> Calibration:
    """What the manifest keeps about how the INT8 artifact was calibrated and searched."""
    return Calibration(
        source=data.source,
        digest=data.digest,
        photos=data.photos,
        holdout_photos=data.holdout_photos,
        calibration_crops=len(data.calibration),
        holdout_crops=len(data.holdout),
        method=method,
        fp32_layers=fp32_layers,
        search_s=search_s,
        search_stopped=stopped,
    )

"""Build missing artifacts, and measure `auto`'s candidates, in a child process, so the
process that serves never imports torch and holds none of the measurement's memory (a
first start then holds the same memory as every later one)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from resnet_serve.shared.children import die_with_parent
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.engines.choice import EngineChoice
from resnet_serve.worker.model.artifacts import Manifest, ModelRepository, Selection
from resnet_serve.worker.model.catalog import ModelSpec

T = TypeVar("T")


def in_child(function: Callable[..., T], *args: object, timeout_s: float | None = None) -> T:
    """`function(*args)` in a freshly spawned interpreter; its errors are raised here,
    and past `timeout_s` the child is killed and TimeoutError raised."""
    context = multiprocessing.get_context("spawn")
    # The caller's thread waits for the child, so the child never outlives its starter.
    with context.Pool(1, initializer=die_with_parent) as pool:
        return pool.apply_async(function, args).get(timeout_s)  # the with-exit terminates


def build_in_child(settings: Settings, choice: EngineChoice) -> tuple[Path, Manifest]:
    return in_child(build_artifact, settings, choice)


def build_candidates_in_child(settings: Settings) -> tuple[Path, Manifest]:
    return in_child(build_candidates, settings)


def measure_in_child(settings: Settings, directory: Path, timeout_s: float) -> Selection:
    return in_child(measure_and_cache, settings, directory, timeout_s=timeout_s)


def _weights(settings: Settings) -> tuple[ModelSpec, Path | None]:
    from resnet_serve.shared.logs import configure_logging
    from resnet_serve.worker.model.catalog import get_spec
    from resnet_serve.worker.model.weights import resolve_weights

    configure_logging(settings.log_level, settings.log_format)
    spec = get_spec(settings.model)
    weights = resolve_weights(
        spec,
        settings.weights,
        settings.weights_dir,
        offline=settings.offline,
        mirror_url=settings.weights_mirror_url,
    )
    return spec, weights


def build_artifact(settings: Settings, choice: EngineChoice) -> tuple[Path, Manifest]:
    """Resolve weights and write the chosen artifact (and the fp32 ONNX one INT8 is
    quantised from) into the model repository. Imports torch."""
    spec, weights = _weights(settings)
    repo = ModelRepository(settings.models_dir)
    if choice.backend == "openvino" and choice.precision == "int8":
        return _int8(settings, spec, weights, repo)
    from resnet_serve.worker.model.export import export_artifact

    backend = "onnx" if choice.backend == "openvino" else choice.backend  # f32/bf16 run it
    return export_artifact(
        spec,
        weights,
        repo,
        backend=backend,
        precision="fp32" if backend == "onnx" else choice.precision,
        device=choice.artifact_device if backend != "onnx" else "any",
        max_batch=settings.max_batch,
    )


def _int8(
    settings: Settings, spec: ModelSpec, weights: Path | None, repo: ModelRepository
) -> tuple[Path, Manifest]:
    from resnet_serve.worker.model.int8_export import export_int8

    return export_int8(
        spec,
        weights,
        repo,
        max_batch=settings.max_batch,
        calibration_dir=settings.calibration_dir,
        calibration_crops=settings.calibration_crops,
        holdout_crops=settings.holdout_crops,
        accuracy_control_iterations=settings.accuracy_control_iterations,
        accuracy_search_budget_s=settings.accuracy_search_budget_s,
        max_accuracy_drop_pt=settings.max_accuracy_drop_pt,
    )


def build_candidates(settings: Settings) -> tuple[Path, Manifest]:
    """Every CPU candidate `auto` chooses among (fp32 ONNX, which ONNX Runtime and
    OpenVINO f32/bf16 run, and INT8), gated and timed here; the choice is recorded in
    the manifest. Imports torch."""
    from resnet_serve.worker.model.selection import INT8_KEY, select

    spec, weights = _weights(settings)
    repo = ModelRepository(settings.models_dir)
    console = Console(stderr=True)
    if weights is None:
        # Random weights never pass INT8's gate, so `auto` could never serve it: not
        # built (a minute on two cores); `--precision int8` builds it when asked.
        console.print("random weights: INT8 is not built for auto (its gate never passes)")
        fp32 = EngineChoice("onnxruntime", "fp32", "cpu", "auto's reference candidate")
        directory, manifest = build_artifact(settings, fp32)
    else:
        directory, manifest = _int8(settings, spec, weights, repo)  # builds fp32 first
        assert INT8_KEY in manifest.artifacts
    with console.status("gating and timing the candidates on this CPU..."):
        manifest.selection = select(settings, directory, manifest)
    repo.save(directory, manifest)
    report(console, manifest.selection)
    return directory, manifest


def measure_and_cache(settings: Settings, directory: Path) -> Selection:
    """Measure on this CPU (another than export's) and keep the result under the home
    directory, so later starts here reuse it rather than flip-flop."""
    from resnet_serve.shared.logs import configure_logging
    from resnet_serve.worker.model.selection import cache_path, select

    configure_logging(settings.log_level, settings.log_format)
    manifest = ModelRepository.read(directory)
    selection = select(settings, directory, manifest)
    path = cache_path(settings, manifest, selection.cpu)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(selection.model_dump_json(indent=2))
    tmp.replace(path)
    return selection


def report(console: Console, selection: Selection) -> None:
    """The candidates, one short line each (80 columns), then the choice."""
    cpu = selection.cpu
    console.print(
        f"  measured on {cpu.model_name} ({', '.join(cpu.flags) or 'no AVX2'}), "
        f"{selection.threads} threads, batch {selection.max_batch}:",
        markup=False,
        highlight=False,
    )
    for c in selection.candidates:
        speed = f"{c.speed:.0f} img/s" if c.img_s else "not timed"
        gate = "" if c.precision == "fp32" else f", drop {c.drop_pt:.2f} pt, {c.reason}"
        console.print(f"    {c.label}: {speed}{gate}", markup=False, highlight=False)
    console.print(f"  auto serves {selection.choice.label}", markup=False, highlight=False)

"""`resnet-serve export` builds artifacts; `resnet-serve models` lists what exists."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from resnet_serve.cli.common import (
    EngineOpt,
    MaxBatch,
    Model,
    PrecisionOpt,
    Repo,
    Weights,
    build_or_exit,
    builds_artifacts,
    err,
    fail,
    settings_from,
)
from resnet_serve.shared.settings import Settings

if TYPE_CHECKING:
    from resnet_serve.worker.model.artifacts import Manifest


def export(
    model: Model = None,
    weights: Weights = None,
    engine: EngineOpt = None,
    precision: PrecisionOpt = None,
    model_repository: Repo = None,
    max_batch: MaxBatch = None,
    calibration_dir: Annotated[
        Path | None,
        typer.Option(help="INT8: calibration photos (default: scikit-image's CC0 photos)"),
    ] = None,
    calibration_crops: Annotated[
        int | None, typer.Option(help="INT8: crops the quantisation ranges are fitted on")
    ] = None,
    holdout_crops: Annotated[
        int | None, typer.Option(help="INT8: crops of held-out photos the gate judges (>= 300)")
    ] = None,
    accuracy_control_iterations: Annotated[
        int | None, typer.Option(help="INT8: layers NNCF may return to fp32 (0: plain PTQ)")
    ] = None,
    accuracy_search_budget_s: Annotated[
        float | None, typer.Option(help="INT8: seconds the accuracy search may run")
    ] = None,
) -> None:
    """Build model artifacts into the model repository. With --engine and --precision
    auto (the defaults) on a CPU: every candidate (fp32 ONNX, OpenVINO INT8), gated and
    timed here, and the choice `auto` serves recorded."""
    settings = settings_from(
        model=model,
        weights=weights,
        engine=engine,
        precision=precision,
        model_repository=model_repository,
        max_batch=max_batch,
        calibration_dir=calibration_dir,
        calibration_crops=calibration_crops,
        holdout_crops=holdout_crops,
        accuracy_control_iterations=accuracy_control_iterations,
        accuracy_search_budget_s=accuracy_search_budget_s,
    )
    importlib.import_module("torch")  # building needs it: a missing extra is named first
    directory, manifest = _build(settings)
    err.print(f"{manifest.name} version {manifest.version}: {directory}")
    for key, entry in manifest.artifacts.items():
        err.print(f"  {key}: {entry.file}")
        if entry.accuracy is not None:
            a = entry.accuracy
            err.print(
                f"    vs fp32: top-1 drop {a.drop_pt:.2f} pt (bound {a.drop_upper_pt:.2f}, "
                f"allowed {a.max_drop_pt:g}); gate {'passed' if a.passed else 'not passed'}"
            )


def _build(settings: Settings) -> tuple[Path, Manifest]:
    from resnet_serve.worker.engines.choice import cuda_present
    from resnet_serve.worker.model.artifacts import BuildError
    from resnet_serve.worker.model.building import build_candidates

    if settings.engine != "auto" or settings.precision != "auto" or cuda_present():
        return build_or_exit(settings)
    try:
        return build_candidates(settings)
    except (BuildError, ValueError) as exc:
        fail(str(exc))


def models(model_repository: Repo = None) -> None:
    """List the models this service knows and the artifacts built so far."""
    settings = settings_from(model_repository=model_repository)
    # Neither imports torch: a gateway install lists models too.
    from resnet_serve.worker.model.artifacts import ModelRepository
    from resnet_serve.worker.model.catalog import BUILTIN

    # One artifact per short block rather than a wide table: readable in 80 columns,
    # nothing cut with "…", and paths never broken across lines.
    console = Console(soft_wrap=True, highlight=False)
    console.print(f"built-in models: {', '.join(BUILTIN)}")
    console.print("plus any torchvision classification model by name (e.g. mobilenet_v3_small)")
    root = settings.models_dir
    repo = ModelRepository(root)
    console.print(f"\nartifacts in {root}:", markup=False)
    found = False
    for name in repo.models():
        for directory, manifest in repo.versions(name):
            found = True
            weights = manifest.weights.file or manifest.weights.source
            console.print(f"{name} version {manifest.version}, weights {weights}", markup=False)
            for key, entry in manifest.artifacts.items():
                built = entry.created_at[:16].replace("T", " ")
                console.print(f"  {key}: max batch {entry.max_batch}, built {built}", markup=False)
                console.print(f"    {_relative(directory / entry.file, root)}", markup=False)
            if manifest.selection is not None:
                chosen, cpu = manifest.selection.choice, manifest.selection.cpu
                console.print(
                    f"  auto serves {chosen.label} ({chosen.speed:.0f} img/s)", markup=False
                )
                threads = manifest.selection.threads
                console.print(f"    measured on {cpu.model_name}, {threads} threads", markup=False)
    if not found and builds_artifacts():
        console.print("  none yet: `resnet-serve export` or the first `serve` builds one")
    elif not found:
        console.print(
            "  none yet, and this install cannot build one (no torch): copy a model "
            "repository built by `resnet-serve export` on a full install here",
            markup=False,
        )


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)

"""`resnet-serve export` builds artifacts; `resnet-serve models` lists what exists."""

from __future__ import annotations

import importlib
import time
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
        typer.Option(help="INT8: calibration photos (default: the shipped free photos)"),
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


def models(
    model_repository: Repo = None,
    model: Model = None,
    wait_s: Annotated[
        float | None,
        typer.Option(
            help="Wait up to this long for an artifact of --model (or RESNET_SERVE_MODEL) "
            "to appear, then exit 0, or 1 if none did (e.g. a worker's init container "
            "waiting for the build Job)"
        ),
    ] = None,
) -> None:
    """List the models this service knows and the artifacts built so far."""
    settings = settings_from(model_repository=model_repository, model=model)
    # Neither imports torch: a gateway install lists models too.
    from resnet_serve.worker.model.artifacts import ModelRepository
    from resnet_serve.worker.model.catalog import BUILTIN

    if wait_s is not None:
        _wait_for_artifact(settings, wait_s)
        return
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


def _wait_for_artifact(settings: Settings, wait_s: float) -> None:
    """Until the repository holds an intact artifact of the model, built from the
    configured weights (any real ones by default); exit 1 after `wait_s`."""
    from resnet_serve.worker.model.artifacts import ModelRepository

    repo, name = ModelRepository(settings.models_dir), settings.model
    weights = settings.weights if settings.weights == "random" else None
    deadline = time.monotonic() + wait_s
    next_note = time.monotonic()
    while True:
        found = repo.find(name, weights)
        if found and any(e.intact(found[0]) for e in found[1].artifacts.values()):
            err.print(f"{name} version {found[1].version} is in {settings.models_dir}")
            return
        now = time.monotonic()
        if now >= deadline:
            fail(
                f"no artifact of {name} in {settings.models_dir} after {wait_s:g} s: build "
                "one there first (`resnet-serve export`; on Kubernetes, the "
                "build-model-repository Job)",
                code=1,
            )
        if now >= next_note:
            err.print(f"waiting for an artifact of {name} in {settings.models_dir}")
            next_note = now + 30
        time.sleep(min(2.0, max(0.0, deadline - now)))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)

"""`resnet-serve export` builds artifacts; `resnet-serve models` lists what exists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from resnet_serve.cli.common import (
    EngineOpt,
    MaxBatch,
    Model,
    PrecisionOpt,
    Repo,
    Weights,
    build_or_exit,
    err,
    settings_from,
)


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
) -> None:
    """Build a model artifact (TorchScript, ONNX or OpenVINO INT8) into the model repository."""
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
    )
    directory, manifest = build_or_exit(settings)
    err.print(f"{manifest.name} version {manifest.version}: {directory}")
    for key, entry in manifest.artifacts.items():
        err.print(f"  {key}: {entry.file}")
        if entry.accuracy is not None:
            a = entry.accuracy
            err.print(
                f"    vs fp32 on {a.crops} held-out crops: top-1 agreement "
                f"{a.top1_agreement:.2%} (lower bound {a.top1_lower_bound:.2%}), top-5 "
                f"containment {a.top5_containment:.2%} (lower bound {a.top5_lower_bound:.2%}); "
                f"gate {'passed' if a.passed else 'not passed'}"
            )


def models(model_repository: Repo = None) -> None:
    """List the models this service knows and the artifacts built so far."""
    settings = settings_from(model_repository=model_repository)
    # Neither imports torch: a gateway install lists models too.
    from resnet_serve.worker.model.artifacts import ModelRepository
    from resnet_serve.worker.model.catalog import BUILTIN

    console = Console()
    console.print(f"built-in models: {', '.join(BUILTIN)}")
    console.print("plus any torchvision classification model by name (e.g. mobilenet_v3_small)")
    repo = ModelRepository(settings.models_dir)
    table = Table(title=f"artifacts in {settings.models_dir}")
    for column in ("model", "version", "weights", "artifact", "file", "max batch", "built"):
        table.add_column(column)
    for name in repo.models():
        for directory, manifest in repo.versions(name):
            weights = manifest.weights.file or manifest.weights.source
            for key, entry in manifest.artifacts.items():
                table.add_row(
                    name,
                    manifest.version,
                    weights,
                    key,
                    str(directory / entry.file),
                    str(entry.max_batch),
                    entry.created_at[:19],
                )
    console.print(table)

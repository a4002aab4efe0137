"""`export --precision int8`: the fp32 ONNX artifact, quantised by OpenVINO/NNCF and
recorded with its calibration set and its accuracy gate's verdict against fp32."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from resnet_serve.worker.model.artifacts import (
    FP32_KEY,
    INT8_KEY,
    ArtifactEntry,
    Manifest,
    ModelRepository,
    sha256_file,
)
from resnet_serve.worker.model.calibration import load_calibration
from resnet_serve.worker.model.catalog import ModelSpec
from resnet_serve.worker.model.export import _step, export_artifact
from resnet_serve.worker.model.quantize import build_int8
from resnet_serve.worker.model.search_clock import SearchClock


def export_int8(
    spec: ModelSpec,
    weights: Path | None,
    repo: ModelRepository,
    *,
    max_batch: int,
    calibration_dir: Path | None,
    calibration_crops: int,
    holdout_crops: int,
    accuracy_control_iterations: int,
    accuracy_search_budget_s: float,
    max_accuracy_drop_pt: float,
    console: Console | None = None,
) -> tuple[Path, Manifest]:
    console = console or Console(stderr=True)
    directory, manifest = _fp32_source(spec, weights, repo, max_batch, console)
    with _step(console, f"loading calibration photos ({calibration_dir or 'default set'})"):
        data = load_calibration(
            calibration_dir,
            size=spec.input_size,
            calibration_crops=calibration_crops,
            holdout_crops=holdout_crops,
            labels=manifest.labels,
        )
    console.print(
        f"  {data.photos} photos, {data.holdout_photos} held out: "
        f"{len(data.calibration)} calibration crops, {len(data.holdout)} held-out crops"
    )
    random_weights = manifest.weights.source == "random"
    with _step(console, f"quantising {spec.name} to INT8 (OpenVINO + NNCF)"):
        result = build_int8(
            directory / manifest.artifacts[FP32_KEY].file,
            directory,
            data,
            random_weights=random_weights,
            max_drop_pt=max_accuracy_drop_pt,
            max_iterations=accuracy_control_iterations,
            clock=SearchClock(accuracy_search_budget_s, console.print),
        )
    accuracy = result.accuracy
    xml, *rest = result.files
    manifest.artifacts[INT8_KEY] = ArtifactEntry(
        backend="openvino",
        precision="int8",
        device="cpu",
        file=xml,
        sha256=sha256_file(directory / xml),
        extra_files={name: sha256_file(directory / name) for name in rest},
        max_batch=max_batch,
        calibration=result.calibration,
        accuracy=accuracy,
    )
    repo.save(directory, manifest)
    _report(console, manifest.artifacts[INT8_KEY])
    return directory, manifest


def _fp32_source(
    spec: ModelSpec, weights: Path | None, repo: ModelRepository, max_batch: int, console: Console
) -> tuple[Path, Manifest]:
    found = repo.find(spec.name, sha256_file(weights) if weights is not None else "random")
    if found and FP32_KEY in found[1].artifacts and found[1].artifacts[FP32_KEY].intact(found[0]):
        return found
    return export_artifact(
        spec,
        weights,
        repo,
        backend="onnx",
        precision="fp32",
        device="any",
        max_batch=max_batch,
        console=console,
    )


def _report(console: Console, entry: ArtifactEntry) -> None:
    """The gate's figures, in lines that fit 80 columns."""
    a, c = entry.accuracy, entry.calibration
    assert a is not None
    assert c is not None
    how = "measured on labelled photos" if a.labelled else "estimated under fp32"
    console.print(
        f"  INT8 vs fp32 on {a.crops} crops of {a.photos} held-out photos, method {c.method}:\n"
        f"    top-1 accuracy drop {a.drop_pt:.2f} pt ({how}),\n"
        f"      95% bound {a.drop_upper_pt:.2f} pt by photo (allowed {a.max_drop_pt:g} pt)\n"
        f"    fp32 confident on {a.confident_crops} crops: agreement "
        f"{a.confident_agreement:.2%}\n"
        f"    top-1 agreement {a.top1_agreement:.2%}, top-5 containment "
        f"{a.top5_containment:.2%}"
    )
    if c.fp32_layers:
        console.print(f"    {len(c.fp32_layers)} layers kept in fp32:")
        for name in c.fp32_layers:
            console.print(f"      {name}", soft_wrap=True)
    if c.search_stopped:
        console.print(f"    accuracy search stopped after {c.search_s:.0f} s: plain INT8 kept")
    if a.passed:
        console.print("  [green]gate passed[/]: INT8 is one of the candidates auto times")
    else:
        console.print(f"  [yellow]gate not passed[/] ({a.reason}): auto never serves it")

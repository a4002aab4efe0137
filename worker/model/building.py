"""Build a missing artifact in a child process, so the process that serves it never
imports torch (a first start then holds the same memory as every later one)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from resnet_serve.shared.settings import Settings
from resnet_serve.worker.engines.choice import EngineChoice
from resnet_serve.worker.model.artifacts import Manifest, ModelRepository


def build_in_child(settings: Settings, choice: EngineChoice) -> tuple[Path, Manifest]:
    """`build_artifact` in a freshly spawned interpreter; its errors are raised here."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(build_artifact, settings, choice).result()


def build_artifact(settings: Settings, choice: EngineChoice) -> tuple[Path, Manifest]:
    """Resolve weights and write the chosen artifact (and the fp32 ONNX one INT8 is
    quantised from) into the model repository. Imports torch."""
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
    repo = ModelRepository(settings.models_dir)
    if choice.backend == "openvino":
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
    from resnet_serve.worker.model.export import export_artifact

    return export_artifact(
        spec,
        weights,
        repo,
        backend=choice.backend,
        precision=choice.precision,
        device=choice.artifact_device,
        max_batch=settings.max_batch,
    )

"""From settings to a warm engine: choose, find or build the artifact, open, warm up."""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_serve.shared.cpus import thread_count
from resnet_serve.shared.jobs import ModelInfo
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.engines.base import Engine
from resnet_serve.worker.engines.choice import EngineChoice, choose_engine, cuda_present
from resnet_serve.worker.engines.registry import open_engine, plugin
from resnet_serve.worker.model.artifacts import (
    ArtifactEntry,
    Manifest,
    ModelRepository,
    artifact_key,
    sha256_file,
)
from resnet_serve.worker.model.selection import entry_for

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadedModel:
    engine: Engine
    manifest: Manifest
    entry: ArtifactEntry
    directory: Path
    labels: list[str]
    # The largest batch warm-up ran: `max_batch`, or less where the device ran out of
    # memory at a larger one.
    max_batch: int = 1
    # Seconds the largest batch took at warm-up: the first measure of batch time, which
    # the visibility timeout is checked against and the watchdog starts from.
    max_batch_s: float = 0.0
    # CPU threads one engine call (one stream's part of a batch) is split over; 1 on a GPU.
    cpu_threads_per_call: int = 1
    # `inference_streams` as resolved for this engine (0, auto, made a number).
    streams: int = 1

    def close(self) -> None:
        self.engine.close()

    def fitted(self, settings: Settings) -> Settings:
        """`settings` with `max_batch` lowered to what warm-up could run, and automatic
        `inference_streams` resolved."""
        update: dict[str, int] = {}
        if self.max_batch < settings.max_batch:
            update["max_batch"] = self.max_batch
        if settings.inference_streams == 0:
            update["inference_streams"] = self.streams
        return settings.model_copy(update=update) if update else settings

    @property
    def info(self) -> ModelInfo:
        accuracy = self.entry.accuracy
        return ModelInfo(
            name=self.manifest.name,
            version=self.manifest.version,
            engine=self.engine.name,
            precision=self.entry.precision,
            input_size=self.manifest.input_size,
            resize_size=self.manifest.resize_size,
            num_classes=len(self.labels),
            random_weights=self.manifest.weights.source == "random",
            top1_agreement=accuracy.top1_agreement if accuracy else None,
            top5_containment=accuracy.top5_containment if accuracy else None,
            accuracy_gate_passed=accuracy.passed if accuracy else None,
            top1_drop_pt=accuracy.drop_pt if accuracy else None,
            top1_drop_bound_pt=accuracy.drop_upper_pt if accuracy else None,
        )


def _wanted_weights(setting: str | None) -> str | None:
    if setting is None or setting == "random":
        return setting
    path = Path(setting).expanduser()
    return sha256_file(path) if path.is_file() else setting


def int8_passed(settings: Settings) -> bool:
    """An INT8 artifact of these weights exists, intact, and its recorded gate passed."""
    found = ModelRepository(settings.models_dir).find(
        settings.model, _wanted_weights(settings.weights)
    )
    if found is None:
        return False
    entry = found[1].artifacts.get(artifact_key("openvino", "int8", "cpu"))
    return bool(entry and entry.accuracy and entry.accuracy.passed and entry.intact(found[0]))


# A serving process measures on a CPU export did not run on; past this, it serves fp32.
MEASURE_TIMEOUT_S = 60.0


def choose(settings: Settings) -> EngineChoice:
    """The engine and precision to serve. On a CPU, `auto` for both serves what the
    measurement on this CPU chose (gated, then timed); set either to pin a fleet."""
    auto = settings.engine == "auto" and settings.precision == "auto"
    measurable = importlib.util.find_spec("onnxruntime") is not None  # not on a gateway
    if auto and measurable and not cuda_present():
        return _measured(settings)
    return choose_engine(settings.engine, settings.precision, int8_passed=int8_passed(settings))


def _measured(settings: Settings) -> EngineChoice:
    from resnet_serve.worker.model.building import build_candidates_in_child, measure_in_child
    from resnet_serve.worker.model.selection import FP32_KEY, recorded

    found = ModelRepository(settings.models_dir).find(
        settings.model, _wanted_weights(settings.weights)
    )
    if found is None or FP32_KEY not in found[1].artifacts:
        log.info("no artifacts for %s yet: building every candidate in a child", settings.model)
        found = build_candidates_in_child(settings)
    directory, manifest = found
    selection = recorded(settings, manifest)
    if selection is None:
        log.info(
            "measuring %s's candidates on this CPU (at most %.0f s)",
            settings.model,
            MEASURE_TIMEOUT_S,
        )
        try:
            selection = measure_in_child(settings, directory, MEASURE_TIMEOUT_S)
        except Exception as exc:  # a failed or slow measurement must not stop serving
            log.warning("measuring failed: %r", exc)
            return EngineChoice("onnxruntime", "fp32", "cpu", f"measuring failed: {exc!r}")
    chosen = selection.choice
    reason = f"auto, measured here: {selection.reason}"
    return EngineChoice(chosen.engine, chosen.precision, "cpu", reason)


def ensure_artifact(settings: Settings, choice: EngineChoice) -> tuple[Path, Manifest]:
    """The repository version holding the chosen artifact, built first if missing."""
    repo = ModelRepository(settings.models_dir)
    key = artifact_key(choice.backend, choice.precision, choice.artifact_device)
    found = repo.find(settings.model, _wanted_weights(settings.weights))
    entry = entry_for(found[1], key) if found else None
    if found and entry:
        directory, manifest = found
        if entry.intact(directory):
            return directory, manifest
        log.warning("%s is missing or corrupt; rebuilding it", directory / entry.file)
    log.info("no %s artifact for %s yet; building it in a child process", key, settings.model)
    # Building needs torch; serving a built ONNX or OpenVINO artifact does not, and this
    # process never imports it.
    from resnet_serve.worker.model.building import build_in_child

    return build_in_child(settings, choice)


def load_model(settings: Settings) -> LoadedModel:
    """Everything a worker does before it may say it is ready."""
    if settings.engine != "auto" and not plugin(settings.engine).backend:
        return plugin(settings.engine).load_model(settings)  # serves without an artifact
    choice = choose(settings)
    log.info(
        "engine: %s %s on %s (%s)", choice.engine, choice.precision, choice.device, choice.reason
    )
    directory, manifest = ensure_artifact(settings, choice)
    entry = entry_for(
        manifest, artifact_key(choice.backend, choice.precision, choice.artifact_device)
    )
    assert entry is not None
    if manifest.weights.source == "random":
        log.warning(
            "%s version %s was built from RANDOM weights: predictions are meaningless",
            manifest.name,
            manifest.version,
        )

    # With `inference_streams` over 1, each stream's calls get their share of the threads.
    streams = streams_for(settings, choice.engine)
    threads = max(1, thread_count(settings.inference_threads) // streams)
    engine = open_engine(
        directory / entry.file,
        backend=entry.backend,
        precision=entry.precision,
        device=choice.device,
        threads=threads,
        streams=streams,
    )
    max_batch, max_batch_s = warm_up(engine, manifest.input_size, settings.max_batch)
    model = LoadedModel(engine, manifest, entry, directory, manifest.labels, max_batch, max_batch_s)
    model.cpu_threads_per_call = threads if choice.device == "cpu" else 1
    model.streams = streams
    log.info("inference: %d stream(s) of %d thread(s) each", streams, threads)
    _log_serving(manifest, entry)
    return model


def streams_for(settings: Settings, engine: str) -> int:
    """`inference_streams`, with 0 (automatic) resolved: two streams for OpenVINO where
    each gets a thread, else one. Measured with OpenVINO INT8 on 2 cores (docs/engines.md):
    +15-20 % req/s under load, the same on decode-bound uploads, and a refusal flood
    keeps capacity; a lone image pays for running on one stream's threads (p50 14-15
    against 9-10 ms). ONNX Runtime fp32 pays more (38 against 22 ms), so it keeps one."""
    if settings.inference_streams:
        return settings.inference_streams
    return 2 if engine == "openvino" and thread_count(settings.inference_threads) >= 2 else 1


def is_out_of_memory(exc: BaseException) -> bool:
    """Host or device memory ran out (torch raises `OutOfMemoryError`, a RuntimeError
    whose message says "CUDA out of memory")."""
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def warm_up(engine: Engine, input_size: int, max_batch: int) -> tuple[int, float]:
    """Run every batch size the batcher can produce once, so no request pays for a
    first-time allocation or graph specialisation (a CUDA graph per size: device memory
    is fixed here, not while serving). Returns the largest batch that ran and its time:
    running out of memory at a batch size lowers the largest batch to the one below,
    and says so; at batch 1 it is an error."""
    start = time.perf_counter()
    largest = 0.0
    for size in range(1, max_batch + 1):
        began = time.perf_counter()
        try:
            engine.infer(np.zeros((size, input_size, input_size, 3), dtype=np.uint8))
        except Exception as exc:
            if size == 1 or not is_out_of_memory(exc):
                raise
            log.warning(
                "out of memory at batch %d during warm-up (%s): serving batches of at most "
                "%d instead of max_batch %d",
                size,
                exc,
                size - 1,
                max_batch,
            )
            return size - 1, largest
        largest = time.perf_counter() - began
    log.info("warmed batch sizes 1..%d in %.1f s", max_batch, time.perf_counter() - start)
    return max_batch, largest


def _log_serving(manifest: Manifest, entry: ArtifactEntry) -> None:
    accuracy = entry.accuracy
    if accuracy is None:
        log.info(
            "serving %s version %s: %s %s",
            manifest.name,
            manifest.version,
            entry.backend,
            entry.precision,
        )
        return
    log.info(
        "serving %s version %s: %s %s, top-1 accuracy vs fp32 %.2f points lower (%s; "
        "95%% bound %.2f) on %d crops of %d held-out photos; accuracy gate: %s",
        manifest.name,
        manifest.version,
        entry.backend,
        entry.precision,
        accuracy.drop_pt,
        "measured" if accuracy.labelled else "estimated",
        accuracy.drop_upper_pt,
        accuracy.crops,
        accuracy.photos,
        accuracy.reason,
    )

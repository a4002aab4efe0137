"""TEST-ONLY engine plug-in `fault` (`RESNET_SERVE_ENGINE=fault`): serves with no artifact,
behind a made-up manifest, predictions meaningless. Configured by the environment, not
by resnet-serve's settings (it is not part of the product):

- `FAULT_ENGINE_LATENCY_MS`: every batch's time (default 0);
- `FAULT_ENGINE_CONTROL_FILE`: the JSON file read before each batch (engine.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from resnet_serve.shared.settings import Settings
from resnet_serve.worker.engines.base import Engine
from resnet_serve.worker.model.artifacts import ArtifactEntry, Manifest, WeightsInfo
from resnet_serve.worker.model.loading import LoadedModel, warm_up
from resnet_serve_fault_engine.engine import NUM_CLASSES, FaultEngine, InjectedFault

__all__ = ["FaultEngine", "InjectedFault", "fault"]

log = logging.getLogger(__name__)
INPUT_SIZE = 224


class FaultPlugin:
    name, backend = "fault", ""

    def open(self, path: Path, *, precision: str, device: str, threads: int) -> Engine:
        raise TypeError("the fault engine opens no artifact")

    def load_model(self, settings: Settings) -> LoadedModel:
        log.warning("TEST-ONLY fault-injecting engine: predictions are meaningless")
        control = os.environ.get("FAULT_ENGINE_CONTROL_FILE")
        engine = FaultEngine(
            input_size=INPUT_SIZE,
            latency_ms=float(os.environ.get("FAULT_ENGINE_LATENCY_MS", "0")),
            control_file=Path(control) if control else None,
        )
        labels = [f"class {i}" for i in range(NUM_CLASSES)]
        manifest = Manifest(
            name=settings.model,
            version="fault",
            input_size=INPUT_SIZE,
            resize_size=256,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            labels=labels,
            weights=WeightsInfo(source="random"),
        )
        # No artifact: the entry carries the precision and batch limit the worker reads.
        entry = ArtifactEntry.model_construct(
            backend="fault", precision="fp32", device="cpu", file="", sha256="", max_batch=256
        )
        max_batch, max_batch_s = warm_up(engine, INPUT_SIZE, settings.max_batch)
        directory = settings.models_dir
        return LoadedModel(engine, manifest, entry, directory, labels, max_batch, max_batch_s)


fault = FaultPlugin()

"""Standalone admission at a cold start (worker/inprocess.py): warm-up timed the engine
on idle cores, so a first burst is admitted at the rate an engine whose calls are split
over several CPU threads keeps when the event loop takes its capped share. Run with the
TEST-ONLY fault engine (a fixed batch time), loaded as a worker loads any engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.inprocess import InProcessBroker
from resnet_serve.worker.loop_share import split_engine_share
from resnet_serve.worker.model.loading import LoadedModel, load_model


def test_a_split_call_loses_up_to_twice_the_loops_share() -> None:
    assert split_engine_share(0.2) == pytest.approx(0.6)
    assert split_engine_share(0) == 1
    assert split_engine_share(0.5) == pytest.approx(0.2)  # never nothing


@pytest.mark.parametrize(("threads", "kept"), [(1, 1.0), (2, 0.6)])
def test_a_cold_start_admits_at_what_a_split_engine_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int, kept: float
) -> None:
    control = tmp_path / "fault.json"
    control.write_text(json.dumps({"mode": "ok", "latency_ms": 100}))
    monkeypatch.setenv("FAULT_ENGINE_CONTROL_FILE", str(control))
    settings = Settings(engine="fault", max_batch=4, home_dir=tmp_path, loop_max_cpu_share=0.2)

    loaded: list[LoadedModel] = []

    def loader(settings: Settings) -> LoadedModel:
        model = load_model(settings)
        model.cpu_threads_per_call = threads
        loaded.append(model)
        return model

    async def seeded_rate() -> float:
        broker = InProcessBroker(settings, Metrics(), loader=loader)
        await broker.start()
        try:
            (worker,) = broker.workers(settings.model)
            return worker.images_per_s
        finally:
            await broker.close()

    rate = asyncio.run(seeded_rate())
    (model,) = loaded
    assert rate == pytest.approx(kept * model.max_batch / model.max_batch_s)

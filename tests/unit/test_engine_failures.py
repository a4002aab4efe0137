""" "This input failed" versus "this engine is broken", with the TEST-ONLY fault engine
plug-in (tests/fault_engine/), loaded the way a worker loads any engine."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from resnet_serve_fault_engine import InjectedFault

from resnet_serve.shared.errors import InferenceFailed
from resnet_serve.shared.jobs import Job, Result
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.batching import WatchedQueue
from resnet_serve.worker.engines.choice import choose_engine
from resnet_serve.worker.engines.registry import plugins
from resnet_serve.worker.model.loading import LoadedModel, load_model
from resnet_serve.worker.runner import BatchRunner, EngineBroken


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fault engine's control file, named in the environment as a worker's would be."""
    path = tmp_path / "fault.json"
    monkeypatch.setenv("FAULT_ENGINE_CONTROL_FILE", str(path))
    return path


def fault_model(control: Path, content: dict[str, object], max_batch: int) -> LoadedModel:
    control.write_text(json.dumps(content))
    return load_model(Settings(engine="fault", max_batch=max_batch, home_dir=control.parent))


def runner(control: Path, mode: str) -> BatchRunner:
    model = fault_model(control, {"mode": "ok"}, max_batch=4)
    control.write_text(json.dumps({"mode": mode}))
    return BatchRunner(
        model, WatchedQueue(), _ignore, max_batch=4, max_batch_wait_ms=1, metrics=Metrics()
    )


async def _ignore(outcomes: object) -> None:
    return None


def job(size: int = 224) -> Job:
    image = np.zeros((size, size, 3), np.uint8)
    return Job("r", "resnet18", image, top_k=3, deadline=time.time() + 60)


def test_the_test_engine_is_a_plug_in_auto_never_picks() -> None:
    assert {"onnxruntime", "openvino", "torchscript", "fault"} <= set(plugins())
    for precision in ("auto", "fp32"):
        assert choose_engine("auto", precision).engine != "fault"
    with pytest.raises(ValueError, match="without an artifact"):
        choose_engine("fault", "auto")
    with pytest.raises(ValueError, match=r"no engine 'tensorrt' is installed \(installed: "):
        choose_engine("tensorrt", "auto")


def test_a_bad_input_fails_alone_and_its_batch_mates_are_answered(control: Path) -> None:
    outcomes = asyncio.run(runner(control, "ok").run_batch([job(), job(200), job()]))
    kinds = [type(outcome) for _, outcome in outcomes]
    assert kinds.count(Result) == 2
    assert kinds.count(InferenceFailed) == 1


@pytest.mark.parametrize("mode", ["fail", "fatal"])
def test_an_engine_that_fails_every_job_is_broken(control: Path, mode: str) -> None:
    with pytest.raises(EngineBroken):
        asyncio.run(runner(control, mode).run_batch([job(), job()]))


def test_a_fatal_error_breaks_the_engine_even_for_one_job(control: Path) -> None:
    with pytest.raises(EngineBroken, match="fatal"):
        asyncio.run(runner(control, "fatal").run_batch([job()]))


def test_single_jobs_failing_in_a_row_break_the_engine(control: Path) -> None:
    broken = runner(control, "fail")

    async def three() -> None:
        for _ in range(3):
            await broken.run_batch([job()])

    with pytest.raises(EngineBroken, match="in a row"):
        asyncio.run(three())


def test_visibility_timeout_too_short_for_leases_is_refused() -> None:
    with pytest.raises(ValueError, match="renews its leases"):
        Settings(visibility_timeout_s=0.1, max_batch_wait_ms=1)


def test_a_gateway_serves_its_configured_models_default_first() -> None:
    settings = Settings(model="resnet18", models="efficientnet_lite0, resnet18")
    assert settings.served_models == ["resnet18", "efficientnet_lite0"]


def test_out_of_memory_at_warm_up_lowers_the_largest_batch_and_says_so(
    control: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Device memory is fixed at warm-up (a CUDA graph per batch size): running out
    there means serving smaller batches, not failing to start."""
    model = fault_model(control, {"oom_above": 5}, max_batch=8)
    assert model.max_batch == 5
    settings = Settings(max_batch=8)
    assert model.fitted(settings).max_batch == 5
    assert model.fitted(Settings(max_batch=4)).max_batch == 4
    assert "out of memory at batch 6 during warm-up" in caplog.text
    assert "batches of at most 5 instead of max_batch 8" in caplog.text


def test_out_of_memory_at_batch_one_is_an_error(control: Path) -> None:
    with pytest.raises(InjectedFault, match="CUDA out of memory"):
        fault_model(control, {"oom_above": 0}, max_batch=8)


def test_out_of_memory_while_serving_breaks_the_engine(control: Path) -> None:
    """None can happen after warm-up; if one does, the device is in an unknown state:
    the worker hands its jobs back and exits non-zero (tests/distributed)."""
    model = fault_model(control, {}, max_batch=4)
    control.write_text(json.dumps({"oom_above": 1}))
    batches = BatchRunner(
        model, WatchedQueue(), _ignore, max_batch=4, max_batch_wait_ms=1, metrics=Metrics()
    )
    with pytest.raises(EngineBroken, match="out of memory"):
        asyncio.run(batches.run_batch([job(), job()]))


def test_small_batches_leave_the_drain_rate_at_what_full_batches_achieve(
    control: Path,
) -> None:
    """A batch takes 100 ms at any size: full batches of 4 drain 40 images/s. Single
    images from a short queue must not lower that (admission would then refuse what
    fits: 10 images/s read as the capacity)."""
    model = fault_model(control, {"mode": "ok", "latency_ms": 100}, max_batch=4)
    loop = BatchRunner(
        model, WatchedQueue(), _ignore, max_batch=4, max_batch_wait_ms=1, metrics=Metrics()
    )

    async def batches(size: int, count: int) -> None:
        for _ in range(count):
            await loop.run_batch([job() for _ in range(size)])

    asyncio.run(batches(4, 3))
    full = loop.images_per_s
    assert 20 < full <= 40  # 4 images per 100 ms, less the call's own overhead
    asyncio.run(batches(1, 5))
    assert loop.images_per_s == full

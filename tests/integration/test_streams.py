"""`inference_streams`: each batch split across one-share streams of one model, on the
real engines (ResNet-18, random weights), with the answers one stream gives; and through
a real server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from resnet_serve.shared.jobs import Job, Result
from resnet_serve.shared.metrics import Metrics
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.batching import WatchedQueue
from resnet_serve.worker.engines.streams import Streams
from resnet_serve.worker.model.loading import LoadedModel, load_model
from resnet_serve.worker.runner import BatchRunner, Deliver
from tests.images import jpeg
from tests.servers import run_server

JOBS, MAX_BATCH = 16, 4


class _Calls:
    """Records the engine calls (real calls, only recorded): each one's batch size, and
    the most running at once."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray]) -> None:
        self._infer = infer
        self._lock = threading.Lock()
        self.sizes: list[int] = []
        self.running = self.most = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            self.sizes.append(len(images))
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self._infer(images)
        finally:
            with self._lock:
                self.running -= 1


def _load(home: Path, engine: str, precision: str, streams: int) -> LoadedModel:
    settings = Settings(
        home_dir=home,
        weights="random",
        offline=True,
        engine=engine,
        precision=precision,
        inference_threads=2,
        inference_streams=streams,
        max_batch=MAX_BATCH,
    )
    return load_model(settings)


def _job(model: LoadedModel, image: np.ndarray, i: int) -> Job:
    return Job(
        "r",
        model.manifest.name,
        image,
        top_k=5,
        deadline=time.time() + 120,
        job_id=str(i),
        full_scores=True,
    )


def _runner(
    model: LoadedModel,
    queue: WatchedQueue[Job],
    deliver: Deliver,
    streams: int,
) -> BatchRunner:
    return BatchRunner(
        model,
        queue,
        deliver,
        max_batch=MAX_BATCH,
        max_batch_wait_ms=1,
        metrics=Metrics(),
        streams=streams,
    )


def _run(model: LoadedModel, images: np.ndarray, streams: int) -> dict[int, np.ndarray]:
    """Every image through a BatchRunner with `streams`: its full scores, by index."""

    async def scenario() -> dict[int, np.ndarray]:
        queue: WatchedQueue[Job] = WatchedQueue()
        scores: dict[int, np.ndarray] = {}
        done = asyncio.Event()

        async def deliver(outcomes: list[tuple[Job, object]]) -> None:
            for job, outcome in outcomes:
                assert isinstance(outcome, Result), outcome
                assert outcome.scores is not None
                scores[int(job.job_id)] = outcome.scores.copy()
            if len(scores) == len(images):
                done.set()

        runner = _runner(model, queue, deliver, streams)
        for i, image in enumerate(images):
            queue.put_nowait(_job(model, image, i))
        task = asyncio.create_task(runner.run())
        await asyncio.wait_for(done.wait(), 60)
        task.cancel()
        return scores

    return asyncio.run(scenario())


@pytest.mark.parametrize(("engine", "precision"), [("onnxruntime", "fp32"), ("openvino", "int8")])
def test_two_streams_split_each_batch_and_give_the_answers_of_one(
    resnet_artifact: None, resnet_int8_artifact: str, home: Path, engine: str, precision: str
) -> None:
    images = np.random.default_rng(3).integers(0, 256, (JOBS, 224, 224, 3), dtype=np.uint8)
    one = _run(_load(home, engine, precision, 1), images, streams=1)
    model = _load(home, engine, precision, 2)
    assert isinstance(model.engine, Streams)  # one model in memory, two streams over it
    calls = _Calls(model.engine.engine.infer)
    model.engine.engine.infer = calls  # type: ignore[method-assign]
    # A batch is cut in one part per stream...
    lone = model.engine.infer(images[:MAX_BATCH])
    assert calls.sizes == [MAX_BATCH // 2, MAX_BATCH // 2]
    np.testing.assert_allclose(lone, np.stack([one[i] for i in range(MAX_BATCH)]), atol=1e-5)
    # ... and under a backlog the streams run side by side.
    two = _run(model, images, streams=2)
    assert calls.most == 2
    assert sorted(two) == list(range(JOBS))  # every job answered once
    for i in range(JOBS):
        assert np.argmax(two[i]) == np.argmax(one[i])
        np.testing.assert_allclose(two[i], one[i], atol=1e-5)


def test_the_torchscript_engine_refuses_streams(home: Path) -> None:
    from resnet_serve.worker.engines.plugins import torchscript

    with pytest.raises(ValueError, match="one batch at a time"):
        torchscript.open(home / "none.pt", precision="fp32", device="cpu", threads=1, streams=2)


def test_a_server_with_two_streams_answers_every_request(
    resnet_artifact: None, home: Path, logs: Path
) -> None:
    photo = jpeg("chelsea")
    with run_server(
        home, logs, "--weights", "random", inference_streams="2", response_cache_entries="0"
    ) as server:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                files = {"file": ("photo.jpg", photo, "image/jpeg")}
                return await asyncio.gather(
                    *(client.post("/v1/classify", files=files) for _ in range(24))
                )

        responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 24
    answers = {r.json()["predictions"][0]["index"] for r in responses}
    assert len(answers) == 1  # the same photo, the same answer from either stream


def test_a_second_batch_waits_for_a_part_and_small_batches_run_whole(
    resnet_artifact: None, home: Path
) -> None:
    """Beside a running batch, one queued image is not taken (a one-image call costs the
    most CPU per image); two are, and run whole on one stream."""
    model = _load(home, "onnxruntime", "fp32", 2)
    assert isinstance(model.engine, Streams)
    release, raw, held = threading.Event(), model.engine.engine.infer, [True]

    def first_call_held(images: np.ndarray) -> np.ndarray:
        if held:  # the real call, once released
            held.clear()
            release.wait(30)
        return raw(images)

    calls = _Calls(first_call_held)  # records each call's size as it starts
    model.engine.engine.infer = calls  # type: ignore[method-assign]
    image = np.zeros((224, 224, 3), dtype=np.uint8)

    async def scenario() -> tuple[list[int], list[int], int]:
        queue: WatchedQueue[Job] = WatchedQueue()
        answered: list[str] = []

        async def deliver(outcomes: list[tuple[Job, object]]) -> None:
            answered.extend(job.job_id for job, _ in outcomes)

        runner = _runner(model, queue, deliver, 2)
        task = asyncio.create_task(runner.run())

        def put(i: int) -> None:
            queue.put_nowait(_job(model, image, i))

        put(0)
        await asyncio.sleep(0.5)  # taken alone; its call is held
        put(1)
        await asyncio.sleep(0.5)
        beside_one = list(calls.sizes), queue.qsize()
        put(2)
        for _ in range(100):  # the second batch: jobs 1 and 2, one call
            if len(answered) == 2:
                break
            await asyncio.sleep(0.05)
        beside_two = list(calls.sizes)
        release.set()
        for _ in range(100):
            if len(answered) == 3:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        assert sorted(answered) == ["0", "1", "2"]
        return beside_one[0], beside_two, beside_one[1]

    first, second, left_queued = asyncio.run(scenario())
    assert first == [1]
    assert left_queued == 1  # one image beside a running batch waits
    assert second == [1, 2]  # two are taken, and run whole on one stream

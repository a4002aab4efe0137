"""In-process measurements, no HTTP: the eager PyTorch reference, the served engine
alone, decode alone, and decode + engine pipelined (the ceiling a service cannot pass)."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import cycle

import numpy as np

from benchmarks.harness.console import log
from benchmarks.harness.cpu import NoiseMeter
from benchmarks.harness.images import ImageSet
from resnet_serve.shared.cpus import thread_count
from resnet_serve.shared.preprocess import PreprocessConfig, config_for, preprocess
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.engines.base import Engine


@dataclass
class Rate:
    items: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def timed_loop(step: Callable[[], int], duration_s: float, warmup_s: float) -> Rate:
    """Call `step` (returns items done) for `warmup_s` unmeasured, then `duration_s`."""
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        step()
    items, start = 0, time.perf_counter()
    end = start + duration_s
    while time.perf_counter() < end:
        items += step()
    return Rate(items, time.perf_counter() - start)


def eager_reference(duration_s: float, threads: int) -> Rate:
    """Eager fp32 torchvision ResNet-18 at batch 1: the recipe the service replaces."""
    import torch
    from torchvision.models import resnet18

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    batch = torch.randn(1, 3, 224, 224)

    def step() -> int:
        with torch.inference_mode():
            model(batch)
        return 1

    return timed_loop(step, duration_s, warmup_s=1.0)


def engine_only(engine: Engine, crops: list[np.ndarray], batch: int, duration_s: float) -> Rate:
    """The served engine alone on already-decoded uint8 crops."""
    stacked = np.stack([crops[i % len(crops)] for i in range(batch)])

    def step() -> int:
        engine.infer(stacked)
        return batch

    return timed_loop(step, duration_s, warmup_s=0.5)


def decode_only(
    images: list[bytes], config: PreprocessConfig, threads: int, duration_s: float
) -> Rate:
    """Decode + resize + crop in a pool of `threads`, nothing else running."""
    with ThreadPoolExecutor(threads) as pool:
        chunk = max(threads * 4, 8)
        source = cycle(images)

        def step() -> int:
            list(pool.map(preprocess, [next(source) for _ in range(chunk)], [config] * chunk))
            return chunk

        return timed_loop(step, duration_s, warmup_s=0.5)


def pipeline_ceiling(
    engine: Engine,
    images: list[bytes],
    config: PreprocessConfig,
    *,
    decode_threads: int,
    batch: int,
    duration_s: float,
) -> Rate:
    """Bytes -> probabilities in this process, as the server does it minus HTTP: a pool
    of `decode_threads` decodes ahead (bounded) while this thread runs full batches.
    Decode and inference overlap and compete for the cores, exactly as in the server."""
    source = cycle(images)
    ahead = 2 * batch + decode_threads
    with ThreadPoolExecutor(decode_threads) as pool:
        pending: deque[Future[np.ndarray]] = deque(
            pool.submit(preprocess, next(source), config) for _ in range(ahead)
        )

        def step() -> int:
            crops = []
            for _ in range(batch):
                crops.append(pending.popleft().result())
                pending.append(pool.submit(preprocess, next(source), config))
            engine.infer(np.stack(crops))
            return batch

        rate = timed_loop(step, duration_s, warmup_s=1.0)
        for future in pending:
            future.cancel()
    return rate


@dataclass
class InProcess:
    engine: str  # the served engine and precision, as load_model resolved them
    eager_b1: float = 0.0
    engine_b1: float = 0.0
    engine_batch: float = 0.0
    decode_only: dict[str, float] = field(default_factory=dict)
    ceiling: dict[str, float] = field(default_factory=dict)  # mean of ceiling_runs
    ceiling_runs: dict[str, list[float]] = field(default_factory=dict)  # before, after
    foreign_cores: dict[str, float] = field(default_factory=dict)  # per measurement


class InProcessBench:
    """The served engine loaded in this process, exactly as the server loads it, for the
    reference, engine-only, decode-only and ceiling measurements of `seconds` each."""

    def __init__(self, settings: Settings, seconds: float, meter: NoiseMeter) -> None:
        from resnet_serve.worker.model.loading import load_model

        self.settings = settings
        self.seconds = seconds
        self.meter = meter
        self.loaded = load_model(settings)  # warm-up included
        info = self.loaded.info
        self.config = config_for(info, settings)
        self.results = InProcess(engine=f"{info.engine} {info.precision}")
        # 0 means "one per usable core", sized exactly as the gateway sizes its pool.
        self.decode_threads = thread_count(settings.decode_threads)

    def reference(self, images: list[bytes]) -> None:
        """Eager fp32 PyTorch and the served engine alone, at batch 1 and the serving batch."""
        out, noise, seconds = self.results, self.results.foreign_cores, self.seconds
        crops = [preprocess(b, self.config) for b in images[:16]]
        batch = self.settings.max_batch
        with self.meter.phase(noise, "eager"):
            out.eager_b1 = eager_reference(seconds, threads=2).per_s
        with self.meter.phase(noise, "engine_b1"):
            out.engine_b1 = engine_only(self.loaded.engine, crops, 1, seconds / 2).per_s
        with self.meter.phase(noise, "engine_batch"):
            out.engine_batch = engine_only(self.loaded.engine, crops, batch, seconds / 2).per_s
        log(
            f"  eager b1 {out.eager_b1:.1f}, engine b1 {out.engine_b1:.1f}, "
            f"engine b{batch} {out.engine_batch:.1f} img/s"
        )

    def decode(self, image_set: ImageSet) -> None:
        key = image_set.key
        with self.meter.phase(self.results.foreign_cores, f"decode/{key}"):
            rate = decode_only(image_set.images, self.config, self.decode_threads, self.seconds)
        self.results.decode_only[key] = rate.per_s
        log(f"  {key}: decode+crop alone {rate.per_s:.1f} img/s")

    def ceiling(self, image_set: ImageSet) -> None:
        """One ceiling measurement; taken right before and right after the set's
        highest-concurrency service run, the one it is compared with."""
        key = image_set.key
        runs = self.results.ceiling_runs.setdefault(key, [])
        with self.meter.phase(self.results.foreign_cores, f"ceiling/{key}/{len(runs)}"):
            rate = pipeline_ceiling(
                self.loaded.engine,
                image_set.images,
                self.config,
                decode_threads=self.decode_threads,
                batch=self.settings.max_batch,
                duration_s=self.seconds,
            )
        runs.append(rate.per_s)
        self.results.ceiling[key] = statistics.mean(runs)
        log(f"  {key}: in-process ceiling {rate.per_s:.1f} img/s")

    def close(self) -> None:
        self.loaded.engine.close()

"""End-to-end benchmark of `resnet-serve serve` on this machine, against its own ceilings.

One command measures, in one run and on the same (noisy) machine:

1. two image sets made from scikit-image photos: ImageNet-sized JPEGs (~500x375) and
   6-megapixel camera-sized JPEGs (3000x2000, upscaled photos plus sensor-like noise);
2. the reference: eager fp32 PyTorch ResNet-18 at batch 1;
3. the served engine alone (batch 1 and the serving batch), decode alone, and the
   in-process ceiling: decode threads and the served engine running as one pipeline in
   this process, with no HTTP (decode and inference compete for the same cores, so the
   ceiling is measured end to end, not summed from parts);
4. the real service over HTTP (`python -m resnet_serve serve` in a subprocess, response
   cache off) at several concurrencies, driven by `wrk` (C, cheap) or an asyncio httpx
   client when `wrk` is missing;
5. cold start (launch -> /readyz 200, artifact already built) and peak server RSS;

then prints a Markdown table and the ratios against the project's targets, and writes
everything to `bench-results/bench_service-<time>.json`.

The machine is shared: before each measurement the benchmark waits (up to
`--quiet-wait-s`) for other processes to go quiet, and reports the CPU they used anyway
("other cores"). Contention from other virtual machines on the same host is invisible
from inside, and moves results by 20% or more between runs: compare a service figure
with the in-process rows of the same run (the ceiling is measured right before and right
after each image set's service runs for that reason), not with another run's.

    python benchmarks/bench_service.py                # full run, ~3-4 minutes when quiet
    python benchmarks/bench_service.py --quick        # smoke run, ~1.5 minutes

Service settings come from the usual RESNET_SERVE_* environment variables (so
`RESNET_SERVE_MAX_BATCH=8 python benchmarks/bench_service.py` tries another batch size)
or from the flags below, which win. The model repository is always a private temporary
directory, the weights are random (same compute as the real ones), and the response
cache is always off.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/bench_service.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from resnet_serve.shared.cpus import thread_count  # noqa: E402
from resnet_serve.shared.preprocess import PreprocessConfig, preprocess  # noqa: E402
from resnet_serve.shared.settings import ENV_PREFIX, Settings, load_settings  # noqa: E402
from resnet_serve.worker.engines.base import Engine  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench-results"
CLASSIFY_PATH = "/v1/classify"
MB = 1024 * 1024

# Settings the benchmark always controls, whatever the caller's environment says.
FORCED_ENV = {
    "OFFLINE": "true",
    "WEIGHTS": "random",
    "RESPONSE_CACHE_ENTRIES": "0",  # repeated images must not be cache hits
    "LOG_LEVEL": "info",
}
# Caller settings that would point the benchmark outside its private model repository.
DROPPED_ENV = ("MODEL_REPOSITORY", "WEIGHTS_CACHE_DIR", "HOST", "PORT")


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageSet:
    key: str
    title: str
    images: list[bytes]

    @property
    def mean_kib(self) -> float:
        return sum(len(b) for b in self.images) / len(self.images) / 1024


def _photos() -> list[Image.Image]:
    from skimage import data

    names = (
        "chelsea",
        "coffee",
        "rocket",
        "astronaut",
        "cat",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "camera",
    )
    return [Image.fromarray(getattr(data, n)()).convert("RGB") for n in names]


def _random_view(
    photo: Image.Image, aspect: float, min_share: float, rng: np.random.Generator
) -> Image.Image:
    """A random crop of `photo` with width/height `aspect`, covering >= min_share of it."""
    w, h = photo.size
    max_w = min(w, int(h * aspect))
    crop_w = int(rng.uniform(min_share, 1.0) * max_w)
    crop_h = int(crop_w / aspect)
    x = int(rng.integers(0, w - crop_w + 1))
    y = int(rng.integers(0, h - crop_h + 1))
    view = photo.crop((x, y, x + crop_w, y + crop_h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return view


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.7, 1.3)))
    return image


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def imagenet_sized(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct ~500x375 JPEGs (landscape and portrait), quality 90."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for i in range(count):
        landscape = i % 4 != 3
        size = (500, 375) if landscape else (375, 500)
        view = _random_view(photos[i % len(photos)], size[0] / size[1], 0.5, rng)
        view = _jitter(view.resize(size, Image.Resampling.BICUBIC), rng)
        out.append(_jpeg(view))
    return _distinct(out)


def camera_sized(count: int, seed: int = 1) -> list[bytes]:
    """`count` distinct 3000x2000 JPEGs: upscaled photos plus noise (so they compress
    like camera output, not like smooth upscales), quality 90."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for i in range(count):
        view = _random_view(photos[i % len(photos)], 1.5, 0.6, rng)
        view = _jitter(view.resize((3000, 2000), Image.Resampling.BICUBIC), rng)
        pixels = np.asarray(view, dtype=np.int16)
        noise = rng.normal(0.0, 4.0, size=pixels.shape).astype(np.int16)
        noisy = np.clip(pixels + noise, 0, 255).astype(np.uint8)
        out.append(_jpeg(Image.fromarray(noisy)))
    return _distinct(out)


def _distinct(images: list[bytes]) -> list[bytes]:
    if len(set(images)) != len(images):
        raise RuntimeError("generated images are not all distinct")
    return images


# --------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class CpuSample:
    wall: float
    busy_s: float  # all CPUs of this machine, not idle and not stolen
    steal_s: float  # taken by the hypervisor for other guests
    own_s: float  # this benchmark, its finished children and the live server


class NoiseMeter:
    """CPU that processes other than this benchmark's use while it measures (this is a
    shared two-core machine), and a gate that waits for them to go quiet first."""

    def __init__(self, threshold_cores: float, max_wait_s: float) -> None:
        self.threshold_cores = threshold_cores
        self.max_wait_s = max_wait_s
        self.server_pid: int | None = None
        self.waited_s = 0.0
        self._tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> CpuSample:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        if self.server_pid is not None:
            own += _proc_cpu_s(f"/proc/{self.server_pid}/stat", self._tick)
        busy = (user + nice + system + irq + softirq) / self._tick
        return CpuSample(time.perf_counter(), busy, steal / self._tick, own)

    @staticmethod
    def foreign_cores(a: CpuSample, b: CpuSample) -> float:
        """Cores busy with other processes between two samples (steal included)."""
        wall = b.wall - a.wall
        other = (b.busy_s - a.busy_s) - (b.own_s - a.own_s) + (b.steal_s - a.steal_s)
        return max(other, 0.0) / wall if wall > 0 else 0.0

    def wait_quiet(self) -> float:
        """Block until other processes use < threshold cores over one second (or the
        wait runs out); returns the foreign load of the last window."""
        start = time.monotonic()
        while True:
            before = self.sample()
            time.sleep(1.0)
            foreign = self.foreign_cores(before, self.sample())
            waited = time.monotonic() - start
            if foreign < self.threshold_cores or waited >= self.max_wait_s:
                self.waited_s += waited - 1.0
                if foreign >= self.threshold_cores:
                    log(f"  machine still busy ({foreign:.2f} foreign cores); measuring anyway")
                return foreign
            if waited < 1.5:
                log(f"  waiting for other processes to go quiet ({foreign:.2f} cores busy)")

    @contextmanager
    def phase(self, into: dict[str, float], name: str) -> Iterator[None]:
        """Gate on quiet, then record the foreign load during the block as into[name]."""
        if self.max_wait_s > 0:
            self.wait_quiet()
        before = self.sample()
        yield
        into[name] = self.foreign_cores(before, self.sample())


def _proc_cpu_s(stat_path: str, tick: int) -> float:
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / tick


# --------------------------------------------------------------------------- timing


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


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def status_kib(self, field_name: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def cpu_seconds(self) -> tuple[float, float]:
        """(event-loop thread, all threads) CPU seconds so far."""
        tick = os.sysconf("SC_CLK_TCK")
        loop = _proc_cpu_s(f"/proc/{self.pid}/task/{self.pid}/stat", tick)
        return loop, _proc_cpu_s(f"/proc/{self.pid}/stat", tick)

    def metrics(self) -> dict[str, float]:
        """Every Prometheus sample, keyed by its full name with labels."""
        import httpx

        samples = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def run_server(env: dict[str, str], log_dir: Path, timeout_s: float = 180) -> Iterator[Server]:
    """`python -m resnet_serve serve` on a free port; `ready_s` is launch -> /readyz 200."""
    import httpx

    port = free_port()
    log_path = log_dir / f"serve-{port}.log"
    command = [sys.executable, "-m", "resnet_serve", "serve", "--weights", "random"]
    command += ["--port", str(port)]
    start = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited ({process.returncode}):\n{server.log_tail()}")
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"server not ready after {timeout_s} s:\n{server.log_tail()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        server.ready_s = time.perf_counter() - start
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    image_set: str
    concurrency: int
    client: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    client_cpu_cores: float  # CPU the load generator itself used, in cores
    server_cpu_cores: float = 0.0
    server_loop_cpu_cores: float = 0.0  # the event-loop thread alone (HTTP, JSON, asyncio)
    foreign_cores: float = 0.0  # other processes on this machine during the run
    server_rss_mb: float = 0.0  # after the run
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_ms_per_request(self) -> float:
        return self.server_cpu_cores / self.req_per_s * 1000 if self.requests else float("nan")


WRK_SCRIPT = r"""
local bodies = {}
local n = 0
local i = 0
local headers = { ["Content-Type"] = "image/jpeg" }

function init(args)
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    n = n + 1
    bodies[n] = f:read("*all")
    f:close()
  end
  -- each wrk thread starts at a different image
  i = math.random(0, n - 1)
end

function request()
  i = (i % n) + 1
  return wrk.format("POST", "{path}", headers, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d,'
    .. ' "write": %d, "status": %d, "timeout": %d,'
    .. ' "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


class WrkClient:
    name = "wrk"

    def __init__(self, work_dir: Path, image_sets: Sequence[ImageSet]) -> None:
        self._script = work_dir / "classify.lua"
        self._script.write_text(WRK_SCRIPT.replace("{path}", CLASSIFY_PATH))
        self._files: dict[str, list[str]] = {}
        for image_set in image_sets:
            folder = work_dir / image_set.key
            folder.mkdir()
            paths = []
            for n, data in enumerate(image_set.images):
                path = folder / f"{n:03d}.jpg"
                path.write_bytes(data)
                paths.append(str(path))
            self._files[image_set.key] = paths

    def run(self, url: str, image_set: str, concurrency: int, duration_s: float) -> Load:
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s"]
        command += ["--timeout", "30s", "-s", str(self._script), url, "--"]
        command += self._files[image_set]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON "))
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        seconds = raw["duration_us"] / 1e6
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
        return Load(
            image_set=image_set,
            concurrency=concurrency,
            client=self.name,
            requests=raw["requests"],
            seconds=seconds,
            errors=errors,
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            client_cpu_cores=cpu / seconds,
        )


class HttpxClient:
    """Fallback load generator: asyncio + httpx in this process. Costs far more CPU per
    request than wrk, which on two cores is taken from the server; reported per run."""

    name = "httpx"

    def __init__(self, image_sets: Sequence[ImageSet]) -> None:
        self._images = {s.key: s.images for s in image_sets}

    def run(self, url: str, image_set: str, concurrency: int, duration_s: float) -> Load:
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        latencies, errors = asyncio.run(
            self._drive(url, self._images[image_set], concurrency, duration_s)
        )
        seconds = time.perf_counter() - wall_start
        p50, p90, p99 = _percentiles_ms(latencies)
        return Load(
            image_set=image_set,
            concurrency=concurrency,
            client=self.name,
            requests=len(latencies),
            seconds=seconds,
            errors=errors,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            client_cpu_cores=(time.process_time() - cpu_start) / seconds,
        )

    @staticmethod
    async def _drive(
        url: str, images: list[bytes], concurrency: int, duration_s: float
    ) -> tuple[list[float], int]:
        import httpx

        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + duration_s
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"content-type": "image/jpeg"}
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

            async def user(offset: int) -> None:
                nonlocal errors
                n = offset
                while time.perf_counter() < stop:
                    start = time.perf_counter()
                    body = images[n % len(images)]
                    n += 1
                    try:
                        response = await client.post(CLASSIFY_PATH, content=body, headers=headers)
                        ok = response.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1

            await asyncio.gather(*(user(i * 7) for i in range(concurrency)))
        return latencies, errors


def _percentiles_ms(latencies_s: list[float]) -> tuple[float, float, float]:
    if len(latencies_s) < 2:
        value = latencies_s[0] * 1000 if latencies_s else float("nan")
        return value, value, value
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[89] * 1000, cuts[98] * 1000


def _histogram_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-run averages from the server's own histograms (deltas of _sum and _count)."""

    def delta(name: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k.split("{")[0] == name)

    out = {}
    for key, metric, scale in (
        ("decode_ms", "resnet_serve_decode_duration_seconds", 1000),
        ("queue_wait_ms", "resnet_serve_queue_wait_seconds", 1000),
        ("inference_ms_per_batch", "resnet_serve_inference_duration_seconds", 1000),
        ("batch_size", "resnet_serve_batch_size", 1),
        ("server_total_ms", "resnet_serve_request_duration_seconds", 1000),
    ):
        count = delta(metric + "_count")
        out[key] = delta(metric + "_sum") / count * scale if count else float("nan")
    out["decode_busy_s"] = delta("resnet_serve_decode_duration_seconds_sum")
    out["inference_busy_s"] = delta("resnet_serve_inference_duration_seconds_sum")
    out["batches"] = delta("resnet_serve_batch_size_count")
    out["cache_hits"] = sum(
        v - before.get(k, 0.0)
        for k, v in after.items()
        if k.startswith("resnet_serve_cache_lookups_total") and 'result="hit"' in k
    )
    return out


@dataclass
class Plan:
    duration_s: float  # per load run
    warmup_s: float  # before each load run, not measured
    inprocess_s: float  # per in-process measurement
    concurrencies: tuple[int, ...]
    cold_starts: int
    imagenet_count: int
    camera_count: int


def plan_for(args: argparse.Namespace) -> Plan:
    concurrencies = tuple(args.concurrency)
    if args.quick:
        return Plan(args.duration_s or 3, 1, 2, concurrencies, 1, 32, 8)
    return Plan(args.duration_s or 12, 3, 6, concurrencies, 2, 48, 8)


def measure_load(
    server: Server,
    client: WrkClient | HttpxClient,
    image_set: str,
    concurrency: int,
    plan: Plan,
    meter: NoiseMeter,
) -> Load:
    if meter.max_wait_s > 0:
        meter.wait_quiet()
    client.run(server.url, image_set, concurrency, plan.warmup_s)
    metrics_before = server.metrics()
    loop_before, all_before = server.cpu_seconds()
    noise_before = meter.sample()
    load = client.run(server.url, image_set, concurrency, plan.duration_s)
    load.foreign_cores = meter.foreign_cores(noise_before, meter.sample())
    loop_after, all_after = server.cpu_seconds()
    load.breakdown = _histogram_means(metrics_before, server.metrics())
    load.server_cpu_cores = (all_after - all_before) / load.seconds
    load.server_loop_cpu_cores = (loop_after - loop_before) / load.seconds
    load.server_rss_mb = server.status_kib("VmRSS") / 1024
    return load


# --------------------------------------------------------------------------- report


@dataclass
class Check:
    name: str
    value: float
    target: float
    higher_is_better: bool
    unit: str = ""

    @property
    def passed(self) -> bool:
        if self.value != self.value:  # NaN
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def row(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        verdict = "PASS" if self.passed else "MISS"
        return (
            f"| {self.name} | {self.value:.2f}{self.unit} | {sign} {self.target:g}{self.unit} "
            f"| **{verdict}** |"
        )


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


@dataclass
class Report:
    settings: dict[str, Any]
    machine: dict[str, Any]
    image_sets: dict[str, dict[str, Any]]
    inprocess: InProcess
    loads: list[Load]
    cold_starts_s: list[float]
    rss_peak_mb: float
    quiet_wait_s: float
    checks: list[Check] = field(default_factory=list)

    def load(self, image_set: str, concurrency: int) -> Load | None:
        return next(
            (x for x in self.loads if x.image_set == image_set and x.concurrency == concurrency),
            None,
        )


def build_checks(report: Report) -> list[Check]:
    ip = report.inprocess
    checks = []
    for key, title in (("imagenet", "ImageNet-sized"), ("camera", "3000x2000")):
        c32 = report.load(key, 32)
        if c32 is not None and key in ip.ceiling:
            ratio = c32.req_per_s / ip.ceiling[key]
            checks.append(Check(f"service@c32 / in-process ceiling ({title})", ratio, 0.85, True))
    if ip.eager_b1:
        batch = report.settings["max_batch"]
        ratio = ip.engine_batch / ip.eager_b1
        checks.append(Check(f"engine@batch {batch} / eager fp32 batch 1", ratio, 2.5, True))
    c1, c8 = report.load("imagenet", 1), report.load("imagenet", 8)
    if c1 is not None and c8 is not None:
        checks.append(Check("p99@c8 / p50@c1 (ImageNet-sized)", c8.p99_ms / c1.p50_ms, 3, False))
    cold = statistics.median(report.cold_starts_s)
    checks.append(Check("cold start (median)", cold, 10, False, " s"))
    checks.append(Check("server peak RSS (VmHWM)", report.rss_peak_mb, 750, False, " MB"))
    imagenet_c32, camera_c8 = report.load("imagenet", 32), report.load("camera", 8)
    if imagenet_c32 is not None:
        checks.append(Check("req/s ImageNet-sized @c32", imagenet_c32.req_per_s, 72, True))
    if camera_c8 is not None:
        checks.append(Check("req/s 3000x2000 @c8", camera_c8.req_per_s, 33, True))
    if c1 is not None:
        checks.append(Check("p50@c1 (ImageNet-sized)", c1.p50_ms, 30, False, " ms"))
    return checks


def _header(report: Report) -> list[str]:
    s, m = report.settings, report.machine
    client = report.loads[0].client if report.loads else "-"
    sets = "; ".join(
        f"{x['title']}: {x['count']} JPEGs, mean {x['mean_kib']:.0f} KiB"
        for x in report.image_sets.values()
    )
    return [
        "## resnet-serve benchmark",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, AVX-512 {m['avx512']}, "
        f"Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}",
        f"- served: {report.inprocess.engine} (engine setting {s['engine']}), "
        f"max_batch {s['max_batch']}, max_batch_wait_ms {s['max_batch_wait_ms']}, "
        f"decode_threads {s['decode_threads']}, inference_threads {s['inference_threads']} "
        "(0 = one per core), response cache off, random weights",
        f"- images: {sets}",
        f"- load generator: {client}; 'other cores' = CPU used by processes outside this "
        f"benchmark during the measurement (waited {report.quiet_wait_s:.0f} s for quiet); "
        "decode, queue and infer columns are means of the server's own histograms over the "
        "run (wall time, so they include waiting for a core)",
    ]


def _inprocess_table(report: Report) -> list[str]:
    ip, s = report.inprocess, report.settings

    def noise(prefix: str) -> float:
        """The worst foreign load over the measurements whose name starts with `prefix`."""
        return max((v for k, v in ip.foreign_cores.items() if k.startswith(prefix)), default=0)

    rows = [
        ("eager fp32 PyTorch, batch 1 (reference)", ip.eager_b1, noise("eager")),
        ("served engine alone, batch 1", ip.engine_b1, noise("engine_b1")),
        (f"served engine alone, batch {s['max_batch']}", ip.engine_batch, noise("engine_batch")),
    ]
    for key, info in report.image_sets.items():
        label = f"decode+crop alone, {s['decode_threads']} threads, {info['title']}"
        rows.append((label, ip.decode_only[key], noise(f"decode/{key}")))
    for key, info in report.image_sets.items():
        runs = " / ".join(f"{x:.1f}" for x in ip.ceiling_runs.get(key, []))
        label = (
            f"**ceiling: decode pool + engine pipelined, {info['title']}** "
            f"(mean of before / after its service runs: {runs})"
        )
        rows.append((label, ip.ceiling[key], noise(f"ceiling/{key}/")))
    lines = [
        "### In process, no HTTP",
        "",
        "| measurement | img/s | other cores |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {value:.1f} | {other:.2f} |" for label, value, other in rows]
    return lines


def _service_table(report: Report) -> list[str]:
    lines = [
        "### Service over HTTP: raw JPEG body, POST /v1/classify",
        "",
        "| images | conc | req/s | p50 ms | p90 ms | p99 ms | errors | mean batch "
        "| decode ms | queue ms | infer ms/batch | server cores (event loop) "
        "| server CPU ms/req | client cores | other cores | RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in report.loads:
        b = x.breakdown
        lines.append(
            f"| {report.image_sets[x.image_set]['title']} | {x.concurrency} | "
            f"{x.req_per_s:.1f} | {x.p50_ms:.1f} | {x.p90_ms:.1f} | {x.p99_ms:.1f} | "
            f"{x.errors} | {b['batch_size']:.1f} | {b['decode_ms']:.1f} | "
            f"{b['queue_wait_ms']:.1f} | {b['inference_ms_per_batch']:.1f} | "
            f"{x.server_cpu_cores:.2f} ({x.server_loop_cpu_cores:.2f}) | "
            f"{x.server_cpu_ms_per_request:.1f} | "
            f"{x.client_cpu_cores:.2f} | {x.foreign_cores:.2f} | {x.server_rss_mb:.0f} |"
        )
    return lines


def render(report: Report) -> str:
    colds = ", ".join(f"{t:.2f}" for t in report.cold_starts_s)
    return "\n".join(
        [
            *_header(report),
            "",
            *([*_inprocess_table(report), ""] if report.inprocess.eager_b1 else []),
            *_service_table(report),
            "",
            f"Cold start (launch -> /readyz 200, artifact already built): {colds} s. "
            f"Server peak RSS (VmHWM) after all load: {report.rss_peak_mb:.0f} MB.",
            "",
            "### Ratios and targets (all measured in this run)",
            "",
            "| ratio | measured | target | |",
            "|---|---:|---:|---|",
            *(check.row() for check in report.checks),
        ]
    )


# --------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    import onnxruntime
    import torch

    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "avx512": "avx512f" in cpuinfo,
        "avx512_bf16": "avx512_bf16" in cpuinfo,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def service_env(home: Path, args: argparse.Namespace) -> dict[str, str]:
    """This process's environment with the benchmark's settings: the caller's other
    RESNET_SERVE_* settings are kept, the flags below override them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(ENV_PREFIX) and k.removeprefix(ENV_PREFIX) in DROPPED_ENV)
    }
    env[ENV_PREFIX + "HOME_DIR"] = str(home)
    env.update({ENV_PREFIX + k: v for k, v in FORCED_ENV.items()})
    flags = {
        "MAX_BATCH": args.max_batch,
        "MAX_BATCH_WAIT_MS": args.max_batch_wait_ms,
        "ENGINE": args.engine,
        "PRECISION": args.precision,
        "DECODE_THREADS": args.decode_threads,
        "INFERENCE_THREADS": args.inference_threads,
    }
    env.update({ENV_PREFIX + k: str(v) for k, v in flags.items() if v is not None})
    if args.precision == "int8":  # random weights never pass the gate: calibrate briefly
        env.update({ENV_PREFIX + "CALIBRATION_CROPS": "64", ENV_PREFIX + "HOLDOUT_CROPS": "300"})
    return env


def export_artifact(env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "resnet_serve", "export", "--weights", "random"]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"export failed:\n{done.stdout}\n{done.stderr}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class InProcessBench:
    """The served engine loaded in this process, exactly as the server loads it, for the
    reference, engine-only, decode-only and ceiling measurements."""

    def __init__(self, settings: Settings, plan: Plan, meter: NoiseMeter) -> None:
        from resnet_serve.worker.model.loading import load_model

        self.settings = settings
        self.plan = plan
        self.meter = meter
        self.loaded = load_model(settings)  # warm-up included
        info = self.loaded.info
        self.config = PreprocessConfig(
            info.resize_size, info.input_size, settings.max_image_pixels, settings.jpeg_draft
        )
        self.results = InProcess(engine=f"{info.engine} {info.precision}")
        # 0 means "one per usable core", sized exactly as the gateway sizes its pool.
        self.decode_threads = thread_count(settings.decode_threads)

    def reference(self, images: list[bytes]) -> None:
        """Eager fp32 PyTorch and the served engine alone, at batch 1 and the serving batch."""
        out, noise, seconds = self.results, self.results.foreign_cores, self.plan.inprocess_s
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
            rate = decode_only(
                image_set.images, self.config, self.decode_threads, self.plan.inprocess_s
            )
        self.results.decode_only[key] = rate.per_s
        log(f"  {key}: decode+crop alone {rate.per_s:.1f} img/s")

    def ceiling(self, image_set: ImageSet) -> None:
        """One ceiling measurement; taken right before and right after the set's service
        runs, so slow drift of this shared machine shows up as a difference."""
        key = image_set.key
        runs = self.results.ceiling_runs.setdefault(key, [])
        with self.meter.phase(self.results.foreign_cores, f"ceiling/{key}/{len(runs)}"):
            rate = pipeline_ceiling(
                self.loaded.engine,
                image_set.images,
                self.config,
                decode_threads=self.decode_threads,
                batch=self.settings.max_batch,
                duration_s=self.plan.inprocess_s,
            )
        runs.append(rate.per_s)
        self.results.ceiling[key] = statistics.mean(runs)
        log(f"  {key}: in-process ceiling {rate.per_s:.1f} img/s")

    def close(self) -> None:
        self.loaded.engine.close()


@dataclass
class ServiceResults:
    cold_starts_s: list[float]
    loads: list[Load]
    rss_peak_mb: float


def measure_service(
    env: dict[str, str],
    work: Path,
    image_sets: list[ImageSet],
    plan: Plan,
    client: WrkClient | HttpxClient,
    meter: NoiseMeter,
    inprocess: InProcessBench | None,
) -> ServiceResults:
    """Cold starts, then one server for all load runs. With `inprocess`, each image set's
    runs are bracketed by in-process ceiling measurements (the server idle meanwhile)."""
    cold_starts = []
    for _ in range(plan.cold_starts - 1):
        if meter.max_wait_s > 0:
            meter.wait_quiet()
        with run_server(env, work) as server:
            cold_starts.append(server.ready_s)
        log(f"cold start {cold_starts[-1]:.2f} s")
    loads = []
    if meter.max_wait_s > 0:
        meter.wait_quiet()
    with run_server(env, work) as server:
        cold_starts.append(server.ready_s)
        meter.server_pid = server.pid
        log(f"cold start {server.ready_s:.2f} s; load with {client.name}")
        for image_set in image_sets:
            if inprocess is not None:
                inprocess.decode(image_set)
                inprocess.ceiling(image_set)
            for concurrency in plan.concurrencies:
                load = measure_load(server, client, image_set.key, concurrency, plan, meter)
                loads.append(load)
                log(
                    f"  {image_set.key} c{concurrency}: {load.req_per_s:.1f} req/s, "
                    f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, errors {load.errors}, "
                    f"other cores {load.foreign_cores:.2f}"
                )
            if inprocess is not None:
                inprocess.ceiling(image_set)
        peak_mb = server.status_kib("VmHWM") / 1024
        meter.server_pid = None
    return ServiceResults(cold_starts, loads, peak_mb)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, help="seconds per load run (default 12)")
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--max-batch", type=int, help="RESNET_SERVE_MAX_BATCH")
    parser.add_argument("--max-batch-wait-ms", type=float, help="RESNET_SERVE_MAX_BATCH_WAIT_MS")
    parser.add_argument("--engine", choices=("auto", "onnxruntime", "torchscript", "openvino"))
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"))
    parser.add_argument("--decode-threads", type=int, help="RESNET_SERVE_DECODE_THREADS")
    parser.add_argument("--inference-threads", type=int, help="RESNET_SERVE_INFERENCE_THREADS")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client concurrencies"
    )
    parser.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument(
        "--skip-inprocess",
        action="store_true",
        help="service only (for sweeping settings): no reference, engine or ceiling",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.25,
        help="before each measurement, wait until other processes use fewer cores than this",
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=60,
        help="longest wait for quiet before each measurement (0: do not wait)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_for(args)
    client_name = args.client
    if client_name == "auto":
        client_name = "wrk" if shutil.which("wrk") else "httpx"
    if client_name == "httpx":
        log("wrk not found (apt-get install wrk): the httpx client shares the server's cores")
    meter = NoiseMeter(args.quiet_threshold, args.quiet_wait_s)
    with tempfile.TemporaryDirectory(prefix="resnet-serve-bench-") as tmp:
        work = Path(tmp)
        env = service_env(work / "home", args)
        for name in [k for k in os.environ if k not in env]:
            del os.environ[name]
        os.environ.update(env)  # in-process measurements read the very same settings
        settings = load_settings()
        log(f"building the artifact (not timed) in {work}")
        export_artifact(env)
        log("making images")
        image_sets = [
            ImageSet("imagenet", "ImageNet-sized 500x375", imagenet_sized(plan.imagenet_count)),
            ImageSet("camera", "3000x2000", camera_sized(plan.camera_count)),
        ]
        bench = None
        if not args.skip_inprocess:
            log("in-process reference and engine")
            bench = InProcessBench(settings, plan, meter)
            bench.reference(image_sets[0].images)
        client: WrkClient | HttpxClient = (
            WrkClient(work, image_sets) if client_name == "wrk" else HttpxClient(image_sets)
        )
        service = measure_service(env, work, image_sets, plan, client, meter, bench)
        if bench is not None:
            bench.close()
        inprocess = (
            bench.results
            if bench is not None
            else InProcess(engine=f"{settings.engine} {settings.precision}")
        )
    report = Report(
        settings=settings.model_dump(mode="json"),
        machine=machine_info(),
        image_sets={
            s.key: {"title": s.title, "count": len(s.images), "mean_kib": s.mean_kib}
            for s in image_sets
        },
        inprocess=inprocess,
        loads=service.loads,
        cold_starts_s=service.cold_starts_s,
        rss_peak_mb=service.rss_peak_mb,
        quiet_wait_s=meter.waited_s,
    )
    report.checks = build_checks(report)
    print(render(report))
    write_json(report, args)
    return 0


def write_json(report: Report, args: argparse.Namespace) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"bench_service-{time.strftime('%Y%m%d-%H%M%S')}.json"
    payload = asdict(report)
    payload["args"] = vars(args)
    for load, raw in zip(report.loads, payload["loads"], strict=True):
        raw["req_per_s"] = load.req_per_s
    for check, raw in zip(report.checks, payload["checks"], strict=True):
        raw["passed"] = check.passed
    path.write_text(json.dumps(payload, indent=2, default=str))
    log(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())

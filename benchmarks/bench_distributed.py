"""Distributed mode against standalone, on this machine, in one run.

Measures, with the same ImageNet-sized JPEGs and load client as bench_service.py:

1. standalone `serve` at concurrency 1 and 32 (the reference of this run);
2. redis-server + 1 `api` gateway + 1 `worker` (inference on both cores);
3. redis-server + 1 gateway + 2 workers (one inference thread each);
4. Redis memory per queued job: jobs written with the real wire format onto a stream no
   worker reads, `used_memory` before and after, divided by the tensor size.

and prints the ratios against issue 3's targets: distributed ≥ 0.8 x standalone at c32,
≤ 3 ms added p50 at c1, ≤ 1.3 x tensor size of Redis memory per queued job.

    python benchmarks/bench_distributed.py            # ~3 minutes when quiet
    python benchmarks/bench_distributed.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import (
    ENV_PREFIX,
    REPO_ROOT,
    RESULTS_DIR,
    HttpxClient,
    ImageSet,
    Load,
    WrkClient,
    export_artifact,
    free_port,
    imagenet_sized,
    log,
)

from resnet_serve.shared.jobs import Job
from resnet_serve.shared.wire import encode_job

TENSOR_BYTES = 224 * 224 * 3


@dataclass
class Shape:
    name: str
    loads: dict[int, Load]


def base_env(home: Path, **settings: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, "REDIS_URL"))}
    env.update(
        {
            ENV_PREFIX + "HOME_DIR": str(home),
            ENV_PREFIX + "OFFLINE": "true",
            ENV_PREFIX + "WEIGHTS": "random",
            ENV_PREFIX + "RESPONSE_CACHE_ENTRIES": "0",
            ENV_PREFIX + "LOG_LEVEL": "warning",
        }
    )
    env.update({ENV_PREFIX + k.upper(): v for k, v in settings.items()})
    return env


@contextmanager
def process(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[None]:
    with log_path.open("wb") as out:
        child = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=out)
    try:
        yield
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


@contextmanager
def redis_server(work: Path) -> Iterator[str]:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(work)]
    with process(command, {}, work / f"redis-{port}.log"):
        deadline = time.monotonic() + 10
        client = redis.Redis(port=port)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "resnet_serve", *args]


@contextmanager
def standalone(home: Path, work: Path) -> Iterator[str]:
    port = free_port()
    with process(cli("serve", "--port", str(port)), base_env(home), work / "serve.log"):
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url


@contextmanager
def distributed(home: Path, work: Path, workers: int) -> Iterator[str]:
    """One gateway and `workers` workers sharing the two cores' inference threads."""
    threads = str(max(1, 2 // workers))
    with ExitStack() as stack:
        url_redis = stack.enter_context(redis_server(work))
        for n in range(workers):
            env = base_env(
                home, redis_url=url_redis, inference_threads=threads, worker_metrics_port="0"
            )
            stack.enter_context(
                process(cli("worker", "--worker-id", f"w{n}"), env, work / f"w{n}.log")
            )
        port = free_port()
        env = base_env(home, redis_url=url_redis)
        stack.enter_context(process(cli("api", "--port", str(port)), env, work / "api.log"))
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        # The gateway is ready once one worker announced itself; give the others a moment.
        time.sleep(3)
        yield url


def drive(
    url: str, client: WrkClient | HttpxClient, concurrencies: Sequence[int], duration_s: float
) -> dict[int, Load]:
    loads = {}
    for concurrency in concurrencies:
        client.run(url, "imagenet", concurrency, min(3.0, duration_s))  # warm-up
        loads[concurrency] = client.run(url, "imagenet", concurrency, duration_s)
        load = loads[concurrency]
        log(f"  c={concurrency}: {load.req_per_s:.1f} req/s, p50 {load.p50_ms:.1f} ms")
    return loads


def redis_bytes_per_job(work: Path, jobs: int = 200) -> float:
    """Memory Redis spends per queued job, as a multiple of the tensor size."""
    with redis_server(work) as url:
        client = redis.Redis.from_url(url)
        image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
        client.xadd("probe", {"x": b"1"})  # the stream's own overhead is not a job's
        before = int(client.info("memory")["used_memory"])
        for n in range(jobs):
            job = Job(f"r{n}", "resnet18", image, 5, time.time() + 10)
            client.xadd("probe", encode_job(job, "resnet-serve:reply:0123456789abcdef"))
        after = int(client.info("memory")["used_memory"])
        client.close()
    return (after - before) / jobs / TENSOR_BYTES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--duration-s", type=float, help="seconds per load run (default 12)")
    args = parser.parse_args(argv)
    duration = args.duration_s or (3.0 if args.quick else 12.0)
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    home = work / "home"
    export_artifact(base_env(home))
    images = ImageSet("imagenet", "ImageNet-sized JPEG", imagenet_sized(48))
    client: WrkClient | HttpxClient = (
        WrkClient(work, [images]) if shutil.which("wrk") else HttpxClient([images])
    )
    log(f"load client: {client.name}")
    shapes = []
    log("standalone")
    with standalone(home, work) as url:
        shapes.append(Shape("standalone", drive(url, client, (1, 32), duration)))
    for workers in (1, 2):
        log(f"distributed, {workers} worker(s)")
        with distributed(home, work, workers) as url:
            name = f"1 gateway + {workers} worker{'s' * (workers > 1)}"
            shapes.append(Shape(name, drive(url, client, (1, 32), duration)))
    memory_ratio = redis_bytes_per_job(work)

    reference = shapes[0].loads
    print("\n| shape | c=1 req/s | c=1 p50 ms | c=32 req/s | c=32 p50 / p99 ms |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        one, many = shape.loads[1], shape.loads[32]
        print(
            f"| {shape.name} | {one.req_per_s:.1f} | {one.p50_ms:.1f} | {many.req_per_s:.1f} "
            f"| {many.p50_ms:.0f} / {many.p99_ms:.0f} |"
        )
    best = max(shapes[1:], key=lambda s: s.loads[32].req_per_s)
    ratio = best.loads[32].req_per_s / reference[32].req_per_s
    added = shapes[1].loads[1].p50_ms - reference[1].p50_ms
    print("\n| target (issue 3) | measured | |")
    print("|---|---|---|")
    print(
        f"| distributed ≥ 0.8 x standalone at c=32 | {ratio:.2f} ({best.name}) | "
        f"{'met' if ratio >= 0.8 else '**missed**'} |"
    )
    print(
        f"| Redis adds ≤ 3 ms p50 at c=1 | {added:+.1f} ms | "
        f"{'met' if added <= 3 else '**missed**'} |"
    )
    print(
        f"| Redis memory per queued job ≤ 1.3 x tensor | {memory_ratio:.3f} x | "
        f"{'met' if memory_ratio <= 1.3 else '**missed**'} |"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"bench_distributed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    payload = {
        "shapes": {s.name: {c: asdict(load) for c, load in s.loads.items()} for s in shapes},
        "redis_memory_per_job_x_tensor": memory_ratio,
    }
    out.write_text(json.dumps(payload, indent=2))
    log(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

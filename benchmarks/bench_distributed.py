"""Distributed mode against standalone, on this machine, in one run.

Measures, with the same ImageNet-sized JPEGs and load client as bench_service:

1. standalone `serve` at concurrency 1 and 32 (the reference of this run);
2. redis-server + 1 `api` gateway + 1 `worker` (inference on both cores);
3. redis-server + 1 gateway + 2 workers (one inference thread each);
4. Redis memory per queued job: jobs written with the real wire format onto a stream no
   worker reads, `used_memory` before and after, divided by the tensor size.

and prints the ratios against its targets: distributed ≥ 0.8 x standalone at c32,
≤ 3 ms added p50 at c1, ≤ 1.3 x tensor size of Redis memory per queued job.
Run it from the repository root:

    python -m benchmarks.bench_distributed            # ~3 minutes when quiet
    python -m benchmarks.bench_distributed --quick    # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness.console import log
from benchmarks.harness.images import ImageSet, imagenet_sized
from benchmarks.harness.load import Load, LoadClient, load_client
from benchmarks.harness.report import Check, write_results
from resnet_serve.shared.jobs import Job
from resnet_serve.shared.wire import encode_job
from tests.cluster import cluster
from tests.redis_server import run_redis
from tests.servers import Server, export_artifact, run_server, server_env

TENSOR_BYTES = 224 * 224 * 3
# Every process of every shape; inference_threads 0 is one per core (the default).
SETTINGS = {
    "weights": "random",
    "response_cache_entries": "0",
    "log_level": "warning",
    "inference_threads": "0",
}


@dataclass
class Shape:
    name: str
    loads: dict[int, Load]


@contextmanager
def distributed(home: Path, work: Path, workers: int) -> Iterator[Server]:
    """One gateway and `workers` workers sharing the two cores' inference threads, each
    worker announced in Redis before the gateway starts."""
    settings = {**SETTINGS, "inference_threads": str(max(1, 2 // workers))}
    ids = tuple(f"w{n}" for n in range(workers))
    with run_redis(work / "redis") as redis, cluster(home, work, redis, ids, **settings) as shape:
        yield shape[0]


def drive(
    url: str, client: LoadClient, concurrencies: Sequence[int], duration_s: float
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
    with run_redis(work / "redis") as redis:
        client = redis.client()
        image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
        client.xadd("probe", {"x": b"1"})  # the stream's own overhead is not a job's
        before = int(client.info("memory")["used_memory"])
        for n in range(jobs):
            job = Job(f"r{n}", "resnet18", image, 5, time.time() + 10)
            client.xadd("probe", encode_job(job, "resnet-serve:reply:0123456789abcdef"))
        after = int(client.info("memory")["used_memory"])
        client.close()
    return (after - before) / jobs / TENSOR_BYTES


def measure(work: Path, duration_s: float) -> tuple[list[Shape], float]:
    home = work / "home"
    export_artifact(server_env(home, **SETTINGS))
    images = ImageSet("imagenet", "ImageNet-sized JPEG", imagenet_sized(48))
    client = load_client("auto", work, [images])
    log(f"load client: {client.name}")
    shapes = []
    log("standalone")
    with run_server(home, work, **SETTINGS) as server:
        shapes.append(Shape("standalone", drive(server.url, client, (1, 32), duration_s)))
    for workers in (1, 2):
        log(f"distributed, {workers} worker(s)")
        with distributed(home, work, workers) as server:
            name = f"1 gateway + {workers} worker{'s' * (workers > 1)}"
            shapes.append(Shape(name, drive(server.url, client, (1, 32), duration_s)))
    return shapes, redis_bytes_per_job(work)


def verdict(check: Check) -> str:
    return "met" if check.passed else "**missed**"


def report(shapes: list[Shape], memory_ratio: float) -> str:
    reference = shapes[0].loads
    lines = ["", "| shape | c=1 req/s | c=1 p50 ms | c=32 req/s | c=32 p50 / p99 ms |"]
    lines.append("|---|---|---|---|---|")
    for shape in shapes:
        one, many = shape.loads[1], shape.loads[32]
        lines.append(
            f"| {shape.name} | {one.req_per_s:.1f} | {one.p50_ms:.1f} | {many.req_per_s:.1f} "
            f"| {many.p50_ms:.0f} / {many.p99_ms:.0f} |"
        )
    best = max(shapes[1:], key=lambda s: s.loads[32].req_per_s)
    ratio = Check("c=32", best.loads[32].req_per_s / reference[32].req_per_s, 0.8, True)
    added = Check("c=1", shapes[1].loads[1].p50_ms - reference[1].p50_ms, 3, False)
    memory = Check("memory", memory_ratio, 1.3, False)
    return "\n".join(
        [
            *lines,
            "",
            "| target | measured | |",
            "|---|---|---|",
            f"| distributed ≥ 0.8 x standalone at c=32 | {ratio.value:.2f} ({best.name}) | "
            f"{verdict(ratio)} |",
            f"| Redis adds ≤ 3 ms p50 at c=1 | {added.value:+.1f} ms | {verdict(added)} |",
            f"| Redis memory per queued job ≤ 1.3 x tensor | {memory.value:.3f} x | "
            f"{verdict(memory)} |",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--duration-s", type=float, help="seconds per load run (default 12)")
    args = parser.parse_args(argv)
    duration = args.duration_s or (3.0 if args.quick else 12.0)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        shapes, memory_ratio = measure(Path(tmp), duration)
    print(report(shapes, memory_ratio))
    payload = {
        "shapes": {s.name: {c: asdict(load) for c, load in s.loads.items()} for s in shapes},
        "redis_memory_per_job_x_tensor": memory_ratio,
    }
    write_results("bench_distributed", payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

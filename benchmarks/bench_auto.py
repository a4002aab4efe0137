"""`auto` against ONNX Runtime fp32 pinned, in the service, in one run.

EfficientNet-Lite0 with its real ImageNet weights (so INT8 may pass its accuracy gate),
`serve` with its defaults against `serve --engine onnxruntime`: ImageNet-sized JPEGs,
wrk at c=32, response cache off, default threads, the two servers alternating over
`--rounds` so drift on this shared machine hits both alike. Beside the in-service
ratio, the model-only ratio `auto`'s own measurement recorded, so the two sit side by
side. Prints a Markdown table and writes bench-results/bench_auto-<time>.json.

    python -m benchmarks.bench_auto                # ~4 minutes
    python -m benchmarks.bench_auto --rounds 1 --duration-s 8   # a smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.harness.console import log
from benchmarks.harness.cpu import NoiseMeter
from benchmarks.harness.images import ImageSet, imagenet_sized
from benchmarks.harness.load import Load, LoadClient, load_client
from benchmarks.harness.report import write_results
from benchmarks.harness.server_load import measure_load
from resnet_serve.worker.model.artifacts import ModelRepository
from resnet_serve.worker.model.selection import FP32_KEY
from tests.servers import resnet_serve, run_server, server_env

MODEL = "efficientnet_lite0"
CONCURRENCY = 32
IMAGES = "imagenet"
ENGINES = ("auto", "onnxruntime")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _serve_once(
    home: Path, logs: Path, engine: str, client: LoadClient, duration_s: float, meter: NoiseMeter
) -> Load:
    with run_server(
        home, logs, "--model", MODEL, engine=engine, response_cache_entries="0"
    ) as server:
        meter.server_pid = server.pid
        return measure_load(
            server,
            client,
            IMAGES,
            CONCURRENCY,
            warmup_s=3,
            duration_s=duration_s,
            meter=meter,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=15)
    parser.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--quiet-wait-s", type=float, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-auto-") as tmp:
        home, logs = Path(tmp) / "home", Path(tmp) / "logs"
        logs.mkdir()
        log(f"export --model {MODEL}: every candidate, gated and timed")
        env = server_env(home, engine="auto")
        subprocess.run(resnet_serve("export", "--model", MODEL), env=env, check=True)
        ((_, manifest),) = ModelRepository(home / "models").versions(MODEL)
        selection = manifest.selection
        assert selection is not None
        fp32 = next(c for c in selection.candidates if c.key == FP32_KEY)
        model_only = selection.choice.speed / fp32.speed
        images = ImageSet(IMAGES, "ImageNet-sized JPEGs", imagenet_sized(48))
        client = load_client(args.client, logs, [images])
        meter = NoiseMeter(threshold_cores=0.3, max_wait_s=args.quiet_wait_s)
        runs: dict[str, list[Load]] = {engine: [] for engine in ENGINES}
        for r in range(args.rounds):
            for engine in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                log(f"round {r + 1}: serve --engine {engine}, c={CONCURRENCY}")
                load = _serve_once(home, logs, engine, client, args.duration_s, meter)
                runs[engine].append(load)

    ratios = [a.req_per_s / o.req_per_s for a, o in zip(*runs.values(), strict=True)]
    print(f"\n{MODEL}, {_cpu()} ({', '.join(selection.cpu.flags)}), {time.strftime('%Y-%m-%d')}")
    print(f"auto chose {selection.choice.label}: {selection.reason}\n")
    print("| round | serve (auto) req/s | p99 ms | --engine onnxruntime req/s | p99 ms | ratio |")
    print("|---|---|---|---|---|---|")
    for r, (a, o) in enumerate(zip(*runs.values(), strict=True)):
        print(
            f"| {r + 1} | {a.req_per_s:.1f} | {a.p99_ms:.0f} | {o.req_per_s:.1f} | "
            f"{o.p99_ms:.0f} | {ratios[r]:.2f}x |"
        )
    print(
        f"\nmodel-only (auto's own measurement, batch {selection.max_batch}): "
        f"{model_only:.2f}x; in the service (c={CONCURRENCY}, median of rounds): "
        f"{statistics.median(ratios):.2f}x; other processes used "
        f"{max(x.foreign_cores for v in runs.values() for x in v):.2f} cores at most"
    )
    write_results(
        "bench_auto",
        {
            "model": MODEL,
            "cpu": _cpu(),
            "selection": selection.model_dump(),
            "model_only_ratio": model_only,
            "service_ratios": ratios,
            "runs": {engine: [vars(x) for x in loads] for engine, loads in runs.items()},
        },
    )


if __name__ == "__main__":
    main()

"""`auto` (or a precision asked for by name) against ONNX Runtime fp32 pinned, in the
service, in one run.

EfficientNet-Lite0 with its real ImageNet weights (so INT8 may pass its accuracy gate),
`serve` with its defaults against `serve --engine onnxruntime`: ImageNet-sized JPEGs,
wrk at c=32, response cache off, default threads, the two servers alternating over
`--rounds` so drift on this shared machine hits both alike. Beside the in-service
ratio, the model-only ratio `auto`'s own measurement recorded, so the two sit side by
side. Prints a Markdown table and writes bench-results/bench_auto-<time>.json.

    python -m benchmarks.bench_auto                # ~4 minutes
    python -m benchmarks.bench_auto --rounds 1 --duration-s 8   # a smoke run
    python -m benchmarks.bench_auto --model resnet18 --random-weights --precision bf16
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
from resnet_serve.worker.model.artifacts import Candidate, ModelRepository
from resnet_serve.worker.model.selection import FP32_KEY
from tests.servers import resnet_serve, run_server, server_env

CONCURRENCY = 32
IMAGES = "imagenet"
ENGINES = ("auto", "onnxruntime")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _serve_once(
    args: argparse.Namespace,
    home: Path,
    logs: Path,
    engine: str,
    client: LoadClient,
    meter: NoiseMeter,
) -> Load:
    precision = args.precision if engine == "auto" else "fp32"
    model = _model_args(args)
    with run_server(
        home, logs, *model, engine=engine, precision=precision, response_cache_entries="0"
    ) as server:
        meter.server_pid = server.pid
        return measure_load(
            server,
            client,
            IMAGES,
            CONCURRENCY,
            warmup_s=3,
            duration_s=args.duration_s,
            meter=meter,
        )


def _model_args(args: argparse.Namespace) -> tuple[str, ...]:
    return ("--model", args.model, *(("--weights", "random") if args.random_weights else ()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--random-weights", action="store_true", help="not the real ones")
    parser.add_argument("--precision", default="auto", help="the first server's precision")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=15)
    parser.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--quiet-wait-s", type=float, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-auto-") as tmp:
        home, logs = Path(tmp) / "home", Path(tmp) / "logs"
        logs.mkdir()
        log(f"export --model {args.model}: every candidate, gated and timed")
        env = server_env(home, engine="auto")
        subprocess.run(resnet_serve("export", *_model_args(args)), env=env, check=True)
        ((_, manifest),) = ModelRepository(home / "models").versions(args.model)
        selection = manifest.selection
        assert selection is not None
        served: Candidate | None = selection.choice
        if args.precision != "auto":  # random weights: no reduced candidate was timed
            served = next((c for c in selection.candidates if c.precision == args.precision), None)
        fp32 = next(c for c in selection.candidates if c.key == FP32_KEY)
        model_only = served.speed / fp32.speed if served and served.img_s else None
        images = ImageSet(IMAGES, "ImageNet-sized JPEGs", imagenet_sized(48))
        client = load_client(args.client, logs, [images])
        meter = NoiseMeter(threshold_cores=0.3, max_wait_s=args.quiet_wait_s)
        runs: dict[str, list[Load]] = {engine: [] for engine in ENGINES}
        for r in range(args.rounds):
            for engine in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                log(f"round {r + 1}: serve --engine {engine}, c={CONCURRENCY}")
                load = _serve_once(args, home, logs, engine, client, meter)
                runs[engine].append(load)

    ratios = [a.req_per_s / o.req_per_s for a, o in zip(*runs.values(), strict=True)]
    flags = ", ".join(selection.cpu.flags)
    print(f"\n{args.model}, {_cpu()} ({flags}), {time.strftime('%Y-%m-%d')}")
    print(f"auto chose {selection.choice.label}: {selection.reason}\n")
    first = f"--precision {args.precision}" if args.precision != "auto" else "(auto)"
    print(
        f"| round | serve {first} req/s | p99 ms | RSS MB "
        "| --engine onnxruntime req/s | p99 ms | RSS MB | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r, (a, o) in enumerate(zip(*runs.values(), strict=True)):
        print(
            f"| {r + 1} | {a.req_per_s:.1f} | {a.p99_ms:.0f} | {a.server_rss_mb:.0f} "
            f"| {o.req_per_s:.1f} | {o.p99_ms:.0f} | {o.server_rss_mb:.0f} | {ratios[r]:.2f}x |"
        )
    alone = f"{model_only:.2f}x" if model_only else "not timed (no passing candidate)"
    print(
        f"\nmodel-only (auto's own measurement, batch {selection.max_batch}): "
        f"{alone}; in the service (c={CONCURRENCY}, median of rounds): "
        f"{statistics.median(ratios):.2f}x; other processes used "
        f"{max(x.foreign_cores for v in runs.values() for x in v):.2f} cores at most"
    )
    write_results(
        "bench_auto",
        {
            "model": args.model,
            "random_weights": args.random_weights,
            "precision": args.precision,
            "cpu": _cpu(),
            "selection": selection.model_dump(),
            "model_only_ratio": model_only,
            "service_ratios": ratios,
            "runs": {engine: [vars(x) for x in loads] for engine, loads in runs.items()},
        },
    )


if __name__ == "__main__":
    main()

"""Hardware report: every engine this machine can run, at several batch sizes.

For each available engine x precision (ONNX Runtime fp32, TorchScript fp32/bf16 and
OpenVINO f32/bf16/INT8 on CPU; TorchScript fp16 on CUDA) and batch size (1, 8, 32 on CPU;
1, 8, 32, 128, 256 on GPU) it measures, for ResNet-18 with random weights (same
compute as the real ones): latency p50/p99 per batch, throughput, peak host RSS (and
device memory on CUDA), and load time from opening the artifact to the first
inference. It also measures JPEG decode + resize + crop per core, the ceiling an
end-to-end service cannot pass.

Each engine runs in its own process, so memory and load time are its own. Writes
`docs/hardware-<device>.md` and a PNG plot (throughput vs batch size per engine).

    python -m benchmarks.hardware_report            # ~5 min on 2 CPU cores
    python -m benchmarks.hardware_report --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from resnet_serve.shared.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent

CPU_BATCHES = (1, 8, 32)
GPU_BATCHES = (1, 8, 32, 128, 256)
# (engine, precision) per device; bf16 only where the CPU has it natively or when asked.
CPU_ENGINES = (
    ("onnxruntime", "fp32"),
    ("torchscript", "fp32"),
    ("torchscript", "bf16"),
    ("openvino", "fp32"),  # OpenVINO runs the fp32 ONNX artifact, in f32 or bf16
    ("openvino", "bf16"),
    ("openvino", "int8"),  # NNCF post-training quantisation of the fp32 ONNX artifact
)
GPU_ENGINES = (("torchscript", "fp16"),)
# The GPU targets, reported, not asserted.
GPU_TARGET_IMG_S_AT_256 = 25_000
GPU_TARGET_P99_MS_AT_8 = 5.0


@dataclass
class Row:
    engine: str
    precision: str
    device: str
    batch: int
    p50_ms: float
    p99_ms: float
    img_per_s: float
    peak_rss_mb: float
    device_mb: float
    load_s: float


def measure_engine(
    engine: str,
    precision: str,
    batches: list[int],
    home: Path,
    seconds: float,
    build_only: bool = False,
) -> list[Row]:
    """In this (child) process: open the engine, time each batch size."""
    from resnet_serve.worker.engines.choice import choose_engine
    from resnet_serve.worker.engines.registry import open_engine
    from resnet_serve.worker.model.artifacts import artifact_key
    from resnet_serve.worker.model.loading import ensure_artifact
    from resnet_serve.worker.model.selection import entry_for

    settings = load_settings(
        engine=engine,
        precision=precision,
        weights="random",
        home_dir=home,
        offline=True,
        max_batch=max(batches),
        # INT8 of random weights: the gate cannot pass, so a small calibration set will do.
        calibration_crops=64,
        holdout_crops=300,
    )
    choice = choose_engine(settings.engine, settings.precision)
    directory, manifest = ensure_artifact(settings, choice)
    if build_only:
        return []  # building imports torch, whose memory must not count as the engine's
    entry = entry_for(
        manifest, artifact_key(choice.backend, choice.precision, choice.artifact_device)
    )
    assert entry is not None
    size = manifest.input_size
    start = time.perf_counter()
    model = open_engine(
        directory / entry.file,
        backend=entry.backend,
        precision=entry.precision,
        device=choice.device,
        threads=0,
    )
    model.infer(np.zeros((1, size, size, 3), np.uint8))
    load_s = time.perf_counter() - start
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        model.infer(images)  # warm this shape
        latencies: list[float] = []
        until = time.perf_counter() + seconds
        while time.perf_counter() < until or len(latencies) < 3:
            t0 = time.perf_counter()
            model.infer(images)
            latencies.append(time.perf_counter() - t0)
        ms = np.array(latencies) * 1000
        rows.append(
            Row(
                engine=engine,
                precision=precision,
                device=choice.device,
                batch=batch,
                p50_ms=float(np.percentile(ms, 50)),
                p99_ms=float(np.percentile(ms, 99)),
                img_per_s=batch * len(ms) / (ms.sum() / 1000),
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                device_mb=_device_peak_mb(choice.device),
                load_s=load_s,
            )
        )
    model.close()
    return rows


def _device_peak_mb(device: str) -> float:
    if device != "cuda":
        return 0.0
    import torch

    return float(torch.cuda.max_memory_allocated()) / 2**20


def run_child(
    engine: str,
    precision: str,
    batches: list[int],
    home: Path,
    seconds: float,
    *,
    build_only: bool = False,
) -> list[Row]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.hardware_report",
        "--child",
        engine,
        precision,
        "--home",
        str(home),
    ]
    command += ["--seconds", str(seconds), "--batches", *map(str, batches)]
    command += ["--build-only"] if build_only else []
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        print(f"  {engine} {precision}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return []
    if build_only:
        return []
    line = done.stdout.strip().splitlines()[-1]
    return [Row(**row) for row in json.loads(line)]


def decode_rate_per_core(seconds: float) -> dict[str, float]:
    """Images per second one core decodes + resizes + crops, per image set."""
    from benchmarks.harness.images import camera_sized, imagenet_sized
    from resnet_serve.shared.preprocess import PreprocessConfig, preprocess

    config = PreprocessConfig(resize_size=256, crop_size=224, max_pixels=40_000_000)
    rates = {}
    for name, images in (
        ("ImageNet-sized JPEG", imagenet_sized(16)),
        ("3000x2000 JPEG", camera_sized(4)),
    ):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < len(images):
            preprocess(images[done % len(images)], config)
            done += 1
        rates[name] = done / (time.perf_counter() - start)
    return rates


def machine() -> dict[str, str]:
    cpu = "unknown"
    flags = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    isa = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    vector = [f for f in isa if f" {f}" in flags]
    return {
        "cpu": cpu,
        "cores": str(len(os.sched_getaffinity(0))),
        "vector": ", ".join(vector) or "none",
        "python": platform.python_version(),
    }


def render(
    rows: list[Row], decode: dict[str, float], info: dict[str, str], device: str, plot: str
) -> str:
    cores = int(info["cores"])
    lines = [
        f"# Hardware report: {device}",
        "",
        f"Machine: {info['cpu']}, {cores} cores ({info['vector']}); Python {info['python']}.",
        f"Produced by `python -m benchmarks.hardware_report` on {time.strftime('%Y-%m-%d')};",
        "ResNet-18, random weights (same compute as the real ones), uint8 224x224 input,",
        "normalisation and softmax inside the graph. One process per engine.",
        "",
        "| engine | precision | device | batch | p50 ms | p99 ms | img/s | peak RSS MB "
        "| device MB | load to first inference s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.engine} | {r.precision} | {r.device} | {r.batch} "
            f"| {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.img_per_s:.1f} | {r.peak_rss_mb:.0f} | {r.device_mb:.0f} | {r.load_s:.2f} |"
        )
    lines += [
        "",
        f"![throughput vs batch size]({plot})",
        "",
        "Decode + EXIF + resize 256 + crop 224 (Pillow, draft mode), one core:",
        "",
    ]
    best = max((r.img_per_s for r in rows), default=0.0)
    for name, rate in decode.items():
        ceiling = rate * cores
        lines.append(
            f"- {name}: {rate:.0f} img/s per core, so {ceiling:.0f} img/s on {cores} cores if "
            f"decoding had them all; the best engine here runs {best:.0f} img/s."
        )
    gpu = [r for r in rows if r.device == "cuda"]
    if gpu:
        at_256 = max((r.img_per_s for r in gpu if r.batch == 256), default=0.0)
        p99_8 = min((r.p99_ms for r in gpu if r.batch == 8), default=float("nan"))
        lines += [
            "",
            "GPU targets (reported, not asserted):",
            f"- model-only fp16 at batch 256: {at_256:.0f} img/s "
            f"(target ≥ {GPU_TARGET_IMG_S_AT_256}).",
            f"- engine p99 at batch 8: {p99_8:.2f} ms (target ≤ {GPU_TARGET_P99_MS_AT_8}).",
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for engine, precision in sorted({(r.engine, r.precision) for r in rows}):
        mine = [r for r in rows if (r.engine, r.precision) == (engine, precision)]
        axes.plot(
            [r.batch for r in mine],
            [r.img_per_s for r in mine],
            marker="o",
            label=f"{engine} {precision}",
        )
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size")
    axes.set_ylabel("images / s")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per batch size")
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes (default per device)")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rows = measure_engine(
            *args.child, args.batches, args.home, args.seconds, build_only=args.build_only
        )
        print(json.dumps([asdict(r) for r in rows]))
        return 0

    from resnet_serve.worker.engines.choice import cpu_has_native_bf16, cuda_present

    cuda = cuda_present()
    device = "cuda" if cuda else "cpu"
    seconds = 0.5 if args.quick else args.seconds
    home = Path(tempfile.mkdtemp(prefix="hardware-report-"))
    rows: list[Row] = []
    for engine, precision in GPU_ENGINES if cuda else CPU_ENGINES:
        batches = args.batches or list(GPU_BATCHES if cuda else CPU_BATCHES)
        if precision == "bf16" and not cpu_has_native_bf16():
            batches = [1, 8]  # emulated bf16 is ~10x slower: keep the run short
        print(f"{engine} {precision}: batches {batches}", file=sys.stderr, flush=True)
        run_child(engine, precision, batches, home, seconds, build_only=True)
        rows += run_child(engine, precision, batches, home, seconds)
    decode = decode_rate_per_core(1.0 if args.quick else 5.0)
    info = machine()
    name = f"hardware-{device}"
    args.out_dir.mkdir(exist_ok=True)
    plot(rows, args.out_dir / f"{name}.png", f"ResNet-18 on {info['cpu']} ({device})")
    report = render(rows, decode, info, device, f"{name}.png")
    (args.out_dir / f"{name}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

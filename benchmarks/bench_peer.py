"""resnet-serve (INT8 by default) against the peer, in one run, on the same images.

The peer is the seed documents' recipe (`benchmarks/peer_app.py`: Flask + gunicorn with
two sync workers, eager fp32 ResNet-18, one image per request). Both run in turn on this
machine, loaded by `wrk` with the same JPEGs; the benchmark prints both and the ratios
against the INT8 path's targets:

- ImageNet-sized JPEGs at c=32: >= 4.0x the peer's req/s;
- 3000x2000 JPEGs at c=8: >= 4.0x the peer's req/s;
- p50 at c=1 (ImageNet-sized): <= 0.35x the peer's;
- serving RSS (peak, all processes) <= 300 MB; cold start from a built artifact <= 3 s.

    python -m benchmarks.bench_peer                    # ~3 minutes
    python -m benchmarks.bench_peer --precision fp32   # fp32 against the same peer
    python -m benchmarks.bench_peer --duration-s 1     # smoke run (figures meaningless)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.harness.console import log
from benchmarks.harness.cpu import status_kib
from benchmarks.harness.images import ImageSet, camera_sized, imagenet_sized
from benchmarks.harness.load import Load, WrkClient
from tests.cluster import wait_until
from tests.servers import (
    export_artifact,
    free_port,
    launch,
    run_server,
    stop_process,
)

RUNS = (("imagenet", 1), ("imagenet", 32), ("camera", 8))


def _peak_rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += status_kib(pid, "VmHWM")
        except OSError:
            continue
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@contextmanager
def run_peer(log_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The peer under gunicorn on a free port, answering /healthz (it has no /readyz)."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    command += ["--timeout", "120", "benchmarks.peer_app:app"]
    log_path = log_dir / "peer.log"
    process = launch(command, dict(os.environ), log_path)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, 180, "the peer")
        yield url, process
    finally:
        stop_process(process)


def measure(client: WrkClient, url: str, duration_s: float) -> dict[tuple[str, int], Load]:
    loads = {}
    for image_set, concurrency in RUNS:
        client.run(url, image_set, concurrency, 3)  # warm-up
        time.sleep(3)  # let a slow server drain what the warm-up left queued
        loads[image_set, concurrency] = client.run(url, image_set, concurrency, duration_s)
        load = loads[image_set, concurrency]
        log(
            f"  {image_set} c{concurrency}: {load.req_per_s:.1f} req/s, p50 {load.p50_ms:.1f} ms,"
            f" errors {load.errors}"
        )
    return loads


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--precision", default="int8", choices=("int8", "fp32"))
    parser.add_argument("--duration-s", type=float, default=10)
    parser.add_argument(
        "--setting", action="append", default=[], help="NAME=VALUE, a server setting to change"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resnet-serve-peer-") as tmp:
        work = Path(tmp)
        home = work / "home"
        sets = [
            ImageSet("imagenet", "ImageNet-sized 500x375", imagenet_sized(48)),
            ImageSet("camera", "3000x2000", camera_sized(8)),
        ]
        client = WrkClient(work, sets)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_SERVE_")}
        env |= {
            "RESNET_SERVE_HOME_DIR": str(home),
            "RESNET_SERVE_OFFLINE": "true",
            "RESNET_SERVE_RESPONSE_CACHE_ENTRIES": "0",
            "RESNET_SERVE_CALIBRATION_CROPS": "64",
            "RESNET_SERVE_HOLDOUT_CROPS": "300",
            "RESNET_SERVE_ENGINE": "openvino" if args.precision == "int8" else "onnxruntime",
            "RESNET_SERVE_PRECISION": args.precision,
        }
        for name, value in (pair.split("=", 1) for pair in args.setting):
            env[f"RESNET_SERVE_{name.upper()}"] = value
        log("building the artifact (not timed)")
        export_artifact(env)
        log("peer: Flask + gunicorn, 2 sync workers, eager fp32")
        with run_peer(work) as (url, process):
            peer = measure(client, url, args.duration_s)
            peer_rss = _peak_rss_mb([process.pid, *_children(process.pid)])
        log(f"resnet-serve serve, {args.precision}")
        # `env` exactly (threads left to the cgroup); ready_s resolved to 50 ms.
        serve_args = ("--weights", "random")
        with run_server(
            home, work, *serve_args, env=env, ready_timeout_s=180, poll_s=0.05
        ) as server:
            ours = measure(client, server.url, args.duration_s)
            ours_rss = _peak_rss_mb([server.pid])
            cold_s = server.ready_s
    small, camera, single = ("imagenet", 32), ("camera", 8), ("imagenet", 1)
    rows = [
        ("ImageNet-sized c=32 req/s", ours[small].req_per_s, peer[small].req_per_s, ">= 4.0x"),
        ("3000x2000 c=8 req/s", ours[camera].req_per_s, peer[camera].req_per_s, ">= 4.0x"),
        ("ImageNet-sized c=1 p50 ms", ours[single].p50_ms, peer[single].p50_ms, "<= 0.35x"),
        ("peak RSS MB", ours_rss, peer_rss, "<= 300 MB"),
    ]
    print(f"\n| | resnet-serve {args.precision} | peer | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for name, mine, theirs, target in rows:
        ratio = f"{mine / theirs:.2f}" if theirs else "n/a (peer answered none)"
        print(f"| {name} | {mine:.1f} | {theirs:.1f} | {ratio} | {target} |")
    print(f"\ncold start from a built artifact: {cold_s:.2f} s (target <= 3 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

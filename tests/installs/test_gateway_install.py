"""The gateway install, as README gives it: the wheel with its base dependencies in a
fresh venv, no torch. Every gateway command runs there against real redis-server and
real servers; the wheel adds one import package and installs offline with --target."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import grpc
import httpx

from resnet_serve.api.grpc.protocol import pb
from tests.cluster import wait_until
from tests.installs.conftest import top_level
from tests.installs.venvs import TIMEOUT_S, run, started, wait_answering
from tests.redis_server import RedisServer
from tests.servers import Server, free_port


def test_wheel_adds_one_import_package_and_installs_offline(wheel: Path, tmp_path: Path) -> None:
    assert top_level(wheel) == ["resnet_serve"]
    target = tmp_path / "target"
    subprocess.run(
        ["pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        timeout=TIMEOUT_S,
    )
    installed = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert installed == ["bin", "resnet_serve"] or installed == ["resnet_serve"]


def test_wheel_ships_its_engines_as_plug_ins_and_not_the_test_engine(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(points).decode()
    section = entry_points.split("[resnet_serve.engines]")[1].split("[")[0]
    engines = sorted(line.split("=")[0].strip() for line in section.splitlines() if "=" in line)
    assert engines == ["onnxruntime", "openvino", "torchscript"]
    assert not [n for n in names if "fault" in n]
    # The linked folders arrive as real packages (a checkout without links has none).
    for module in ("api/app.py", "worker/runner.py", "shared/settings.py"):
        assert f"resnet_serve/{module}" in names


def test_gateway_venv_has_no_torch(gateway_venv: Path) -> None:
    heavy = "('torch', 'torchvision', 'onnxruntime')"
    probe = f"import importlib.util as u; print([m for m in {heavy} if u.find_spec(m)])"
    out = subprocess.run(
        [str(gateway_venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_client_imports_without_server_code(gateway_venv: Path) -> None:
    probe = (
        "import sys; from resnet_serve.client import Client, AsyncClient; "
        "print(sorted(m for m in sys.modules if m.startswith('resnet_serve.') "
        "and not m.startswith('resnet_serve.client')))"
    )
    out = subprocess.run(
        [str(gateway_venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_help_and_models(gateway_venv: Path, tmp_path: Path) -> None:
    for args in (["--help"], ["api", "--help"], ["jobs-worker", "--help"], ["predict", "--help"]):
        result = run(gateway_venv, *args)
        assert result.returncode == 0, result.stderr
    listed = run(gateway_venv, "models", env={"RESNET_SERVE_HOME_DIR": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    assert "resnet18" in listed.stdout
    assert "efficientnet_lite0" in listed.stdout
    assert "this install cannot build one (no torch)" in listed.stdout
    assert "Traceback" not in listed.stderr


def test_api_and_jobs_worker_run_against_redis(
    gateway_venv: Path, redis_server: RedisServer, logs: Path
) -> None:
    port, grpc_port = free_port(), free_port()
    env = {"RESNET_SERVE_REDIS_URL": redis_server.url}
    args = ("api", "--port", str(port), "--grpc-port", str(grpc_port))
    with started(gateway_venv, logs, *args, env=env) as gateway:
        wait_answering(gateway, f"http://127.0.0.1:{port}/healthz")
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200
        # The slim install serves gRPC too (its packages are the gateway's own).
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            live = channel.unary_unary(
                "/inference.GRPCInferenceService/ServerLive",
                request_serializer=pb.ServerLiveRequest.SerializeToString,
                response_deserializer=pb.ServerLiveResponse.FromString,
            )
            assert live(pb.ServerLiveRequest(), timeout=10).live
    assert run(gateway_venv, "jobs-worker", "--check", "--worker-id", "w1", env=env).returncode == 1
    with started(gateway_venv, logs, "jobs-worker", "--worker-id", "w1", env=env) as jobs:

        def checked() -> bool:
            assert jobs.poll() is None, "the jobs-worker exited"
            return (
                run(gateway_venv, "jobs-worker", "--check", "--worker-id", "w1", env=env).returncode
                == 0
            )

        wait_until(checked, TIMEOUT_S, "jobs-worker --check")


def test_predict_through_a_server(gateway_venv: Path, lite_server: Server, tmp_path: Path) -> None:
    from tests.images import jpeg

    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(jpeg("chelsea"))
    result = run(gateway_venv, "predict", "--url", lite_server.url, "--top-k", "3", str(photo))
    assert result.returncode == 0, result.stderr
    assert "efficientnet_lite0" in result.stdout
    assert "cat" in result.stdout  # chelsea is a tabby: a cat class ranks first
    assert "Traceback" not in result.stderr

"""An install without an extra: the commands that need it say which extra to install and
exit 2, never a ModuleNotFoundError traceback; the rest work. A `cpu-worker` install (no
torch) serves an ONNX artifact built elsewhere."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from resnet_serve import __version__
from tests.cli.shim import EVERY_EXTRA, TORCH, command, run_cli
from tests.images import jpeg
from tests.servers import free_port, server_env, stop_process

GATEWAY_ONLY = EVERY_EXTRA


@pytest.fixture(scope="module")
def onnx_home(home: Path) -> Path:
    """The random-weight resnet18 built as ONNX (with torch), as shipped to a CPU worker."""
    result = run_cli(home, "export", "--engine", "onnxruntime", "--weights", "random")
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "chelsea.jpg"
    path.write_bytes(jpeg("chelsea"))
    return path


def assert_names_extra(result: subprocess.CompletedProcess[str], extra: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "ModuleNotFoundError" not in result.stderr
    assert f"pip install 'resnet-serve[{extra}]'" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--weights", "random"),
        ("worker", "--weights", "random"),
        ("export", "--weights", "random"),
        ("predict", "--weights", "random", "IMAGE"),
    ],
    ids=["serve", "worker", "export", "predict"],
)
def test_gateway_install_names_the_extra(
    tmp_path: Path, image: Path, args: tuple[str, ...]
) -> None:
    argv = [str(image) if a == "IMAGE" else a for a in args]
    result = run_cli(tmp_path / "home", *argv, blocked=GATEWAY_ONLY, timeout_s=120)
    assert_names_extra(result, "export" if args[0] == "export" else "cpu-worker")


def test_building_without_torch_names_the_export_extra(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "home", "export", "--weights", "random", blocked=TORCH)
    assert_names_extra(result, "export")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in result.stderr


def test_gateway_commands_work_without_any_extra(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "models", blocked=GATEWAY_ONLY).returncode == 0
    version = run_cli(home, "--version", blocked=GATEWAY_ONLY)
    assert version.returncode == 0
    assert version.stdout.strip() == f"resnet-serve {__version__}"
    for name in ("api", "jobs-worker", "serve", "worker", "export", "predict", "models"):
        assert run_cli(home, name, "--help", blocked=GATEWAY_ONLY).returncode == 0


def test_cpu_worker_install_predicts_with_a_built_onnx_artifact(
    onnx_home: Path, image: Path
) -> None:
    result = run_cli(
        onnx_home,
        "predict",
        "--weights",
        "random",
        "--engine",
        "onnxruntime",
        str(image),
        blocked=TORCH,
    )
    assert result.returncode == 0, result.stderr
    assert "resnet18 v1 (onnxruntime fp32)" in result.stdout


@pytest.fixture
def torchless_server(onnx_home: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "serve.log"
    argv = command(TORCH, "serve", "--weights", "random", "--port", str(port))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=server_env(onnx_home), stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"not ready:\n{log_path.read_text()}")
        yield url
    finally:
        stop_process(process)


def test_cpu_worker_install_serves_a_built_onnx_artifact(torchless_server: str) -> None:
    answer = httpx.post(
        f"{torchless_server}/v1/classify",
        content=jpeg("chelsea"),
        headers={"content-type": "image/jpeg"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    models = httpx.get(f"{torchless_server}/v1/models", timeout=10).json()
    assert models[0]["engine"] == "onnxruntime"

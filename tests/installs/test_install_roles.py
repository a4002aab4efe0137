"""Each install role in its own fresh venv, as README's Install section gives it: the
commands of the role run, and a command that needs a missing extra answers with the
extra to install and exit status 2, never a traceback. (The full role is the developer
venv `make install` builds: the rest of the suite runs its `export`.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.images import jpeg
from tests.installs.conftest import ROOT
from tests.installs.venvs import run, started, wait_answering
from tests.servers import free_port


def assert_names_extra(result: subprocess.CompletedProcess[str], extra: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"pip install 'resnet-serve[{extra}]'" in result.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (("serve", "--weights", "random"), "cpu-worker"),
        (("worker", "--weights", "random"), "cpu-worker"),
        (("export", "--weights", "random"), "export"),
        (("predict", "--weights", "random", "cat.jpg"), "cpu-worker"),
    ],
    ids=["serve", "worker", "export", "predict"],
)
def test_gateway_install_names_the_missing_extra(
    gateway_venv: Path, tmp_path: Path, args: tuple[str, ...], extra: str
) -> None:
    (tmp_path / "cat.jpg").write_bytes(jpeg("chelsea"))
    result = subprocess.run(
        [str(gateway_venv / "bin" / "resnet-serve"), *args],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "RESNET_SERVE_HOME_DIR": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_names_extra(result, extra)
    if args[0] == "predict":  # and the way that works on this install
        assert "resnet-serve predict --url http://HOST:8000" in result.stderr
    if args[0] == "serve":  # refused before anything claims an engine
        assert "engine:" not in result.stderr


def test_cpu_worker_install_cannot_export(cpu_worker_venv: Path, tmp_path: Path) -> None:
    result = run(
        cpu_worker_venv,
        "export",
        "--weights",
        "random",
        env={"RESNET_SERVE_HOME_DIR": str(tmp_path)},
    )
    assert_names_extra(result, "export")


def test_cpu_worker_install_serves_and_predicts_a_built_artifact(
    cpu_worker_venv: Path, home: Path, resnet_artifact: None, logs: Path, tmp_path: Path
) -> None:
    """The artifact is built by the full install (the `resnet_artifact` fixture) into a
    model repository, which the torch-free worker install then serves."""
    env = {
        "RESNET_SERVE_HOME_DIR": str(home),
        "RESNET_SERVE_OFFLINE": "true",
        "RESNET_SERVE_ENGINE": "onnxruntime",
    }
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(jpeg("chelsea"))
    predicted = run(cpu_worker_venv, "predict", "--weights", "random", str(photo), env=env)
    assert predicted.returncode == 0, predicted.stderr
    assert "onnxruntime" in predicted.stdout
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with started(
        cpu_worker_venv, logs, "serve", "--weights", "random", "--port", str(port), env=env
    ) as server:
        wait_answering(server, f"{url}/readyz")
        answer = httpx.post(
            f"{url}/v1/classify",
            content=jpeg("chelsea"),
            headers={"content-type": "image/jpeg"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3
        assert httpx.get(f"{url}/v1/models", timeout=10).json()[0]["engine"] == "onnxruntime"


def venv_mb(venv: Path) -> float:
    return sum(p.stat().st_size for p in venv.rglob("*") if p.is_file()) / 1e6


def readme_size_mb(role: str) -> float:
    """The venv size README's Install table gives for `role`."""
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == role:
            number, unit = cells[-1].split()
            assert unit == "MB", line
            return float(number)
    raise AssertionError(f"no {role!r} row in README's Install table")


def test_install_sizes_are_readmes(gateway_venv: Path, cpu_worker_venv: Path) -> None:
    """README's figures within 10 % of what a fresh venv of each role takes."""
    for role, venv in (("gateway", gateway_venv), ("CPU worker", cpu_worker_venv)):
        measured, said = venv_mb(venv), readme_size_mb(role)
        assert abs(measured - said) <= 0.1 * said, f"{role}: {measured:.0f} MB, README {said}"

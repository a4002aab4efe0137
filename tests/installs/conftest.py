"""Installs as users make them: a wheel of the project, and fresh virtual environments
per install role, built once per test session."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's (pure Python) wheel, built from this checkout without network."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("resnet_serve-*.whl")
    return built


def top_level(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/top_level.txt")]
        return archive.read(name).decode().split()


def fresh_venv(directory: Path, requirement: str, *, byte_compile: bool = True) -> Path:
    """A new venv with `requirement` installed. Without `byte_compile` (a third of an
    install's time), modules are compiled as they are imported: for a venv that only
    runs a client, not one whose size or install a test checks."""
    venv.create(directory, with_pip=True)
    subprocess.run(
        [
            str(directory / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            *([] if byte_compile else ["--no-compile"]),
            requirement,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return directory


@pytest.fixture(scope="session")
def gateway_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the gateway install: the wheel and its base dependencies only."""
    return fresh_venv(tmp_path_factory.mktemp("gateway-venv"), str(wheel))


@pytest.fixture(scope="session")
def cpu_worker_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the CPU-worker install: ONNX Runtime, no torch."""
    return fresh_venv(tmp_path_factory.mktemp("cpu-worker-venv"), f"{wheel}[cpu-worker]")

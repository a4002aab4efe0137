from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, run_redis
from tests.servers import Server, export_artifact, resnet_serve, run_server, server_env

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model repository for the whole run: artifacts are built once, reused after."""
    return tmp_path_factory.mktemp("resnet-serve-home")


@pytest.fixture(scope="session")
def logs() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lite_server(home: Path, logs: Path) -> Iterator[Server]:
    """efficientnet_lite0 with its real ImageNet weights."""
    with run_server(home, logs, "--model", "efficientnet_lite0") as server:
        yield server


@pytest.fixture(scope="session")
def resnet_server(home: Path, logs: Path) -> Iterator[Server]:
    """The default model, resnet18, with explicitly random weights (plumbing only)."""
    with run_server(home, logs, "--weights", "random", max_batch_wait_ms="10") as server:
        yield server


@pytest.fixture(scope="session")
def resnet_artifact(home: Path) -> None:
    """Build the random-weights resnet18 artifact once, so workers start in seconds and
    never race to build it."""
    export_artifact(server_env(home))


@pytest.fixture(scope="session")
def resnet_int8_artifact(home: Path) -> str:
    """The random-weights resnet18 INT8 artifact, built once with few calibration crops
    (the gate still judges the minimum 300 held-out crops); `export`'s output."""
    done = subprocess.run(
        resnet_serve(
            *("export", "--weights", "random", "--engine", "openvino", "--precision", "int8"),
            *("--calibration-crops", "16", "--holdout-crops", "300"),
        ),
        env=server_env(home),
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stderr


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with run_redis(tmp_path / "redis") as server:
        yield server

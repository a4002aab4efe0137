from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.redis_server import RedisServer, run_redis
from tests.servers import Server, export_artifact, resnet_serve, run_server, server_env

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SESSION_STARTED = time.time()
LEFTOVER_GRACE_S = 15.0


def leftover_processes() -> list[psutil.Process]:
    """What the suite started and did not end: children of this process still running,
    and orphans (adopted by PID 1) of this session that run this interpreter."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True) if not _own_tracker(p, me)}
    python = os.path.realpath(sys.executable)
    for process in psutil.process_iter(["ppid", "create_time", "exe"]):
        info = process.info
        orphan = info["ppid"] == 1 and (info["create_time"] or 0) >= SESSION_STARTED
        if orphan and info["exe"] and os.path.realpath(info["exe"]) == python:
            found[process.pid] = process
    return [p for p in found.values() if _alive(p)]


def _own_tracker(process: psutil.Process, me: psutil.Process) -> bool:
    """This process's own multiprocessing resource tracker (started when a test spawned a
    pool here): it ends with this process, as it should."""
    try:
        return process.ppid() == me.pid and "multiprocessing.resource_tracker" in " ".join(
            process.cmdline()
        )
    except psutil.Error:
        return False


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:200]
    except psutil.Error:
        return "(gone)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A process the suite leaves behind fails the run: on a shared machine it would run
    for good (and a server's helpers outliving it is a bug users would meet too)."""
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = leftover_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftover_processes()
    if left:
        lines = [f"  {p.pid}: {_command(p)}" for p in left]
        print("\nprocesses the test session left running:\n" + "\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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

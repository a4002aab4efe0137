"""A server's helper processes (the KServe parser pool and multiprocessing's resource
tracker) end with it, however it ends: none is left running under PID 1."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import psutil
import pytest

from tests.cluster import wait_until
from tests.hostile import pixels_json
from tests.servers import run_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_helpers_end_with_the_server(
    home: Path, logs: Path, resnet_artifact: None, signum: signal.Signals
) -> None:
    with run_server(home, logs, "--weights", "random", kserve_parse_processes="1") as server:
        # A JSON header past the inline size is parsed in the pool: it starts a process.
        response = httpx.post(
            f"{server.url}/v2/models/resnet18/infer",
            content=pixels_json(1),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        helpers = psutil.Process(server.pid).children(recursive=True)
        assert helpers, "the parser pool started no process"
        server.process.send_signal(signum)
        server.process.wait(timeout=60)

        def all_gone() -> bool:
            return not [h for h in helpers if h.is_running() and h.status() != "zombie"]

        wait_until(all_gone, 20, f"helpers of a server ended by {signum.name}")

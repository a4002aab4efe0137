"""README's distributed quick start, run as written (only Redis's address and the port
pointed at the test's own), with a model that is not the gateway's default: the worker
announces it, the gateway serves it, and the curl answers 200."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.images import jpeg
from tests.readme import README
from tests.redis_server import RedisServer
from tests.servers import free_port, server_env

TIMEOUT_S = 240


def quick_start() -> str:
    """The first ```bash block of README's "Distributed mode" section."""
    section = README.read_text().split("\n## Distributed mode\n", 1)[1]
    found = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert found, "README's Distributed mode section has no bash block"
    return found.group(1)


def test_readme_distributed_quick_start_answers_for_a_worker_announced_model(
    home: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    block = quick_start()
    assert "--model efficientnet_lite0" in block  # not the gateway's default model
    port = free_port()
    script = (
        block.replace("redis://127.0.0.1:6379/0", redis_server.url)
        .replace("--port 8000", f"--port {port}")
        .replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    )
    (tmp_path / "cat.jpg").write_bytes(jpeg("chelsea"))
    env = server_env(home, worker_metrics_port=str(free_port()))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        # Files, not pipes: the worker and gateway the block starts keep writing.
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # the worker and gateway it starts share its group
        )
    try:
        process.wait(timeout=TIMEOUT_S)  # bash ends once curl has its answer
    finally:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                break
            time.sleep(2)
    answer = out.read_text()
    assert process.returncode == 0, f"{answer}\n{err.read_text()[-3000:]}"
    assert '"model":"efficientnet_lite0"' in answer.replace(" ", ""), answer
    assert '"predictions"' in answer

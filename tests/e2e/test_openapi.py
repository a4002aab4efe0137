"""Schemathesis fuzzes every documented operation of a live server from its own
/openapi.json: no 500s, and every answer fits its documented status codes, content
types, headers and schemas."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers import Server


def test_schemathesis_finds_nothing(resnet_server: Server, logs: Path, tmp_path: Path) -> None:
    # The command line, not the pytest plugin: the plugin does not run under pytest 9.
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{resnet_server.url}/openapi.json",
        "--checks=all",
        # "Schema-valid data is accepted" cannot hold for an image API: no schema says
        # which bytes decode to an image, so valid-looking uploads are rightly refused.
        "--exclude-checks=positive_data_acceptance",
        "--max-examples=25",
        "--seed=20261122",  # the same cases every run
        "--generation-database=none",  # and no example database left in the repo
        # One worker: CPython 3.11's ast.parse, which Hypothesis calls to describe
        # strategies, is not thread-safe ("AST constructor recursion depth mismatch").
        "--workers=1",
        "--request-timeout=30",
        "--suppress-health-check=all",
        "--report=junit",
        f"--report-junit-path={logs / 'schemathesis.xml'}",
        "--no-color",
    ]
    # Its caches go to tmp_path, not into the repository.
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    (logs / "schemathesis.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated, run.stdout[-2000:]
    assert int(generated.group(1)) > 300  # every operation got real cases


def test_every_route_documents_its_answers(resnet_server: Server) -> None:
    spec = httpx.get(f"{resnet_server.url}/openapi.json").json()
    assert {"/v1/classify", "/v2/models/{model_name}/infer", "/healthz", "/metrics"} <= set(
        spec["paths"]
    )
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("description"), where
            assert "200" in operation["responses"], where
            if path.startswith(("/v1/classify", "/v2/models")):
                assert {"404", "503"} <= set(operation["responses"]), where
    for name, schema in spec["components"]["schemas"].items():
        if name.startswith(("HTTPValidationError", "ValidationError")):
            continue  # FastAPI's own, unused: validation errors answer ErrorResponse
        documented = "examples" in schema or all(
            "examples" in field or "$ref" in field or "anyOf" in field or "items" in field
            for field in schema.get("properties", {}).values()
        )
        assert documented, f"{name} has no examples"

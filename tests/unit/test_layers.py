"""The layers as a checked contract, read from every import statement in the source
(function-level and TYPE_CHECKING imports included):

    cli      the composition root: may import every layer below
    api      the gateway            -> shared           (never worker, cli)
    worker   the inference side     -> shared           (never api, cli)
    shared   the bottom layer       -> nothing above it
    client   the Python client      -> nothing of the server
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "resnet_serve"
LAYERS = ("cli", "api", "worker", "shared", "client")
ALLOWED = {
    "cli": {"cli", "api", "worker", "shared", "client"},
    "api": {"api", "shared"},
    "worker": {"worker", "shared"},
    "shared": {"shared"},
    "client": {"client"},
}
SOURCES = {
    "cli": ROOT / PACKAGE / "cli",
    "client": ROOT / PACKAGE / "client",
    "api": ROOT / "api",
    "worker": ROOT / "worker",
    "shared": ROOT / "shared",
}


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.append("." * node.level + (node.module or ""))  # unreadable: a violation
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def violations(layer: str) -> list[str]:
    found = []
    for path in sorted(SOURCES[layer].rglob("*.py")):
        for module in imported_modules(path):
            target = layer_of(module)
            if module.startswith(".") or (target is not None and target not in ALLOWED[layer]):
                found.append(f"{path.relative_to(ROOT)} imports {module}")
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_what_it_may(layer: str) -> None:
    assert violations(layer) == []


def test_nothing_imports_the_bare_folders() -> None:
    """`api`, `worker` and `shared` exist only as resnet_serve.*: the wheel installs
    nothing else, so a bare import works from a clone and nowhere else."""
    bare = []
    folders = (
        "api",
        "worker",
        "shared",
        "tests",
        "benchmarks",
        f"{PACKAGE}/cli",
        f"{PACKAGE}/client",
    )
    for path in sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] in {"api", "worker", "shared", "cli", "client"}:
                bare.append(f"{path.relative_to(ROOT)} imports {module}")
    assert bare == []


def test_the_contract_sees_a_violation(tmp_path: Path) -> None:
    offender = tmp_path / "offender.py"
    offender.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from resnet_serve.worker.runner import BatchRunner\n"
        "def f():\n"
        "    import resnet_serve.cli.common\n"
    )
    targets = {layer_of(m) for m in imported_modules(offender)} - {None}
    assert targets == {"worker", "cli"}
    assert not targets <= ALLOWED["api"]
    relative = tmp_path / "relative.py"
    relative.write_text("from ..worker import runner\n")
    assert imported_modules(relative) == ["..worker"]  # counted as a violation


def test_a_checkout_without_its_links_fails_loudly(tmp_path: Path) -> None:
    """Where links are not links (a Windows checkout), importing says why at once."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text((ROOT / PACKAGE / "__init__.py").read_text())
    for layer in ("api", "worker", "shared"):
        (package / layer).write_text(f"../{layer}")  # what git writes without symlinks
    probe = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 1
    assert "resnet_serve/api is not a directory" in probe.stderr
    assert "core.symlinks" in probe.stderr

"""The command-line checkers the deploy tests run. Each comes from a package that
`make install` (PyPI, into the venv) or .ci/run (Debian) installs; a missing one fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The venv's copy first (hadolint, kubectl, docker-compose), then PATH (promtool)."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (see .ci/run and pyproject.toml)")
    return found


def run(*argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """Run a checker; fail with its own words when it complains."""
    result = subprocess.run(
        [tool(argv[0]), *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} failed ({result.returncode}):\n{output}"
    return output

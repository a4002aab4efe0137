"""The curl examples of README and docs/*.md, extracted as written, to run against real
servers: each command runs in bash exactly as the page prints it, with only the documented address
(127.0.0.1:8000 / localhost:8000) pointed at the test server and the example job id
replaced by the id the example before it created."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.images import encode, jpeg, photo

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))
# README's distributed quick start asks a worker-announced model, retrying while the
# processes it starts come up: tests/distributed/test_readme_quick_start.py runs it whole.
QUICK_START = "Distributed mode"
EXAMPLE_JOB_ID = "9b2f4c0d1e8a4f6b8c3d5e7f9a1b2c3d"
_ADDRESS = re.compile(r"(?:http://)?(?:127\.0\.0\.1|localhost):8000")
# Reports the status of every answer, whatever flags the example uses.
_CURL_WRAPPER = """#!/bin/sh
exec /usr/bin/curl -sS -w '\\nHTTP_STATUS %{http_code}\\n' "$@"
"""


@dataclass(frozen=True)
class Example:
    section: str
    command: str


def curl_examples(text: str | None = None) -> list[Example]:
    """Every curl command in the ```bash blocks of README and docs/ (or of `text`), with
    its `## ` section; the distributed quick start's has its own test."""
    if text is None:
        found = [e for page in PAGES for e in curl_examples(page.read_text())]
        return [e for e in found if e.section != QUICK_START]
    examples: list[Example] = []
    section = ""
    in_bash = False
    pending: list[str] = []
    for line in text.splitlines():
        if not in_bash and line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            pending = []
            continue
        if not in_bash:
            continue
        if not pending and not line.startswith("curl "):
            continue
        pending.append(line)
        joined = "\n".join(pending)
        if joined.endswith("\\") or not _complete(joined):
            continue
        examples.append(Example(section, joined))
        pending = []
    return examples


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def example_files(directory: Path) -> None:
    """The files README's examples name."""
    (directory / "cat.jpg").write_bytes(jpeg("chelsea"))
    (directory / "a.jpg").write_bytes(jpeg("coffee"))
    small = photo("rocket").resize((320, 240), Image.Resampling.BILINEAR)
    (directory / "b.png").write_bytes(encode(small, "PNG"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("a.jpg", (directory / "a.jpg").read_bytes())
        bundle.writestr("b.png", (directory / "b.png").read_bytes())
    (directory / "photos.zip").write_bytes(archive.getvalue())


@dataclass(frozen=True)
class Outcome:
    command: str
    status: int
    body: str


def run_examples(examples: list[Example], url: str, directory: Path) -> list[Outcome]:
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "curl"
    wrapper.write_text(_CURL_WRAPPER)
    wrapper.chmod(0o755)
    example_files(directory)
    job_id = EXAMPLE_JOB_ID
    outcomes = []
    for example in examples:
        command = _ADDRESS.sub(url, example.command).replace(EXAMPLE_JOB_ID, job_id)
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=directory,
            env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        statuses = re.findall(r"^HTTP_STATUS (\d+)$", result.stdout, re.MULTILINE)
        status = int(statuses[-1]) if statuses else 0
        body = result.stdout + result.stderr
        outcomes.append(Outcome(example.command, status, body))
        found = re.search(r'"job_id":\s*"([0-9a-f]{32})"', result.stdout)
        if found:
            job_id = found.group(1)
    return outcomes


def assert_all_succeed(outcomes: list[Outcome]) -> None:
    failed = [(o.command, o.status, o.body[-500:]) for o in outcomes if not 200 <= o.status < 300]
    assert failed == [], json.dumps(failed, indent=1)

"""README's curl examples, run as written against a standalone `serve` (resnet18): each
answers 2xx. Bulk jobs are distributed-only (tests/distributed/test_readme_examples.py)."""

from __future__ import annotations

from pathlib import Path

from tests.readme import assert_all_succeed, curl_examples, run_examples
from tests.servers import Server


def test_readme_curl_examples_succeed_standalone(resnet_server: Server, tmp_path: Path) -> None:
    examples = [e for e in curl_examples() if e.section != "Bulk jobs"]
    assert len(examples) >= 5
    assert_all_succeed(run_examples(examples, resnet_server.url, tmp_path))

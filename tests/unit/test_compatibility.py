"""Rolling upgrades mix old and new processes: what tests/golden/ recorded (OpenAPI,
Redis key names, wire fields, metric names and labels, setting names) must still be
there, unchanged. Additions are fine; refresh the snapshot with `python -m tests.compat
--write` once they are intended."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.compat import GOLDEN, SNAPSHOTS

# Prose and samples in the OpenAPI documents: rewording them breaks no client.
PROSE = {"description", "summary", "examples", "example"}


def missing(golden: Any, current: Any, path: str = "") -> list[str]:
    """Where `current` drops or changes something `golden` has (dict keys may be added;
    lists of names may grow; prose may change; any other value must be equal)."""
    if isinstance(golden, dict) and isinstance(current, dict):
        return [
            problem
            for key, value in golden.items()
            if key not in PROSE
            for problem in (
                missing(value, current[key], f"{path}/{key}")
                if key in current
                else [f"{path}/{key} is gone"]
            )
        ]
    if (
        isinstance(golden, list)
        and isinstance(current, list)
        and path.endswith(
            ("job_fields", "job_header", "reply", "reply_result", "reply_error", "model_info")
        )
    ):
        return [f"{path}: {name!r} is gone" for name in golden if name not in current]
    if golden != current:
        return [f"{path}: {json.dumps(golden)[:200]} became {json.dumps(current)[:200]}"]
    return []


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_nothing_recorded_is_gone_or_changed(name: str) -> None:
    golden = json.loads((GOLDEN / name).read_text())
    current = json.loads(json.dumps(SNAPSHOTS[name]()))
    if name == "settings.json":  # a list of names: may grow
        assert sorted(set(golden) - set(current)) == []
    else:
        assert missing(golden, current) == []


def test_the_check_catches_a_rename() -> None:
    golden = {"paths": {"/v1/classify": {"post": {"operationId": "classify"}}}}
    renamed = {"paths": {"/v1/predict": {"post": {"operationId": "classify"}}}}
    changed = {"paths": {"/v1/classify": {"post": {"operationId": "other"}}}}
    grown = {"paths": {"/v1/classify": {"post": {"operationId": "classify", "x": 1}}, "/new": {}}}
    assert missing(golden, renamed) == ["/paths//v1/classify is gone"]
    assert len(missing(golden, changed)) == 1
    assert missing(golden, grown) == []

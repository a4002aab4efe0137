"""Rolling upgrades mix old and new processes: what tests/golden/ recorded (OpenAPI,
Redis key names, wire fields, metric names and labels, setting names) must still be
there, unchanged. Additions are fine; refresh the snapshot with `python -m tests.compat
--write` once they are intended. A removal passes only where tests/golden/removals.json
records it with its reason."""

from __future__ import annotations

import json

import pytest

from tests.compat import GOLDEN, SNAPSHOTS, missing, recorded_removals, unrecorded


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_nothing_recorded_is_gone_or_changed(name: str) -> None:
    golden = json.loads((GOLDEN / name).read_text())
    current = json.loads(json.dumps(SNAPSHOTS[name]()))
    assert unrecorded(name, golden, current) == []


@pytest.mark.parametrize(
    ("name", "path"),
    [(name, path) for name, paths in recorded_removals().items() for path in paths],
)
def test_a_recorded_removal_is_really_gone(name: str, path: str) -> None:
    """removals.json stays true: what it says was removed is not served any more."""
    current = json.loads(json.dumps(SNAPSHOTS[name]()))
    assert path.count("/") == 1, "removals are recorded for top-level entries"
    if name == "settings.json":
        assert path.lstrip("/") not in current
    else:
        assert missing({path.lstrip("/"): None}, current) == [f"{path} is gone"]


def test_only_a_recorded_removal_passes() -> None:
    golden = {"a": 1, "b": 2}
    assert unrecorded("redis-keys.json", golden, {"a": 1}) == ["/b is gone"]
    assert unrecorded("redis-keys.json", {"worker": "x"}, {}) == []  # recorded


def test_the_check_catches_a_rename() -> None:
    golden = {"paths": {"/v1/classify": {"post": {"operationId": "classify"}}}}
    renamed = {"paths": {"/v1/predict": {"post": {"operationId": "classify"}}}}
    changed = {"paths": {"/v1/classify": {"post": {"operationId": "other"}}}}
    grown = {"paths": {"/v1/classify": {"post": {"operationId": "classify", "x": 1}}, "/new": {}}}
    assert missing(golden, renamed) == ["/paths//v1/classify is gone"]
    assert len(missing(golden, changed)) == 1
    assert missing(golden, grown) == []

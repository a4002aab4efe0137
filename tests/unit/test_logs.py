"""Log lines that come by the thousand during an outage are summarised, not repeated."""

from __future__ import annotations

import logging
import time

import pytest

from resnet_serve.shared.logs import Summarised


def test_a_flood_of_one_kind_is_one_line_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    summary = Summarised(logging.getLogger("flood"), interval_s=0.2)
    with caplog.at_level(logging.WARNING, logger="flood"):
        for i in range(1000):
            summary.warning("broker_unavailable", "refused request %d", i)
        summary.warning("queue_full", "another kind")  # its own line at once
        time.sleep(0.25)
        summary.warning("broker_unavailable", "refused request %d", 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "refused request 0",
        "another kind",
        "refused request 1000 (and 999 more broker_unavailable in the last 0.2 s)",
    ]

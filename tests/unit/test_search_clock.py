"""The INT8 accuracy search's clock: it says its budget up front, reports progress, and
stops the search at the first evaluation past the budget, never before."""

from __future__ import annotations

import time

import pytest

from resnet_serve.worker.model.search_clock import SearchClock, SearchOverBudget


def test_the_budget_is_said_before_the_search_starts() -> None:
    lines: list[str] = []
    SearchClock(90, lines.append).start("plain INT8 failed the gate")
    assert lines == [
        "    plain INT8 failed the gate",
        "    accuracy search: up to 90 s (first and last layers in fp32, then NNCF)",
    ]
    assert max(len(line) for line in lines) <= 80  # a terminal's width, uncut


def test_a_step_that_failed_says_why_within_80_columns() -> None:
    lines: list[str] = []
    clock = SearchClock(90, lines.append)
    clock.note("first and last layers in fp32", "top-1 drop bound 1.23 pt > 1 pt", False)
    clock.note("first and last layers in fp32", "passed", True)
    failed, passed = lines
    assert failed.startswith("    first and last layers in fp32 (0 s): failed:\n")
    assert failed.endswith("\n      top-1 drop bound 1.23 pt > 1 pt")
    assert passed == "    first and last layers in fp32 (0 s): passed"
    assert max(len(row) for line in lines for row in line.splitlines()) <= 80


def test_progress_is_reported_while_the_search_runs() -> None:
    lines: list[str] = []
    clock = SearchClock(3600, lines.append, every_s=0)
    clock.start("why")
    for _ in range(3):
        clock.tick()
    assert len(lines) == 5
    assert lines[-1].startswith("    accuracy search: 0 s of 3600 s, 3 evaluations")


def test_progress_lines_are_spaced_out() -> None:
    lines: list[str] = []
    clock = SearchClock(3600, lines.append, every_s=3600)
    clock.start("why")
    for _ in range(100):
        clock.tick()
    assert len(lines) == 2  # only the opening lines: no evaluation came 3600 s later


def test_the_search_stops_at_the_first_evaluation_past_its_budget() -> None:
    clock = SearchClock(0.05, lambda _: None)
    clock.start("why")
    clock.tick()  # within the budget: goes on
    time.sleep(0.1)
    with pytest.raises(SearchOverBudget, match=r"0.05 s budget after 2 evaluations"):
        clock.tick()
    assert clock.elapsed_s >= 0.05

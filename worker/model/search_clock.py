"""The INT8 accuracy search's clock. NNCF's search has no time limit of its own and
prints little while it ranks layers, so it runs against this clock: progress on screen
every few seconds, and a stop once its budget is spent."""

from __future__ import annotations

import time
from collections.abc import Callable


class SearchOverBudget(Exception):
    """The search used its whole budget; the caller keeps what it had before."""


class SearchClock:
    """Ticked once per model evaluation the search makes (NNCF calls our validation
    function for every candidate it tries)."""

    def __init__(
        self, budget_s: float, report: Callable[[str], None], *, every_s: float = 10.0
    ) -> None:
        self.budget_s = budget_s
        self.evaluations = 0
        self._report = report
        self._every_s = every_s
        self._started = time.monotonic()
        self._reported = self._started

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def start(self, why: str) -> None:
        """Say why the search runs and how long it may take, then start the clock."""
        self._report(f"    {why}")
        budget = f"up to {self.budget_s:g} s"
        self._report(f"    accuracy search: {budget} (first and last layers in fp32, then NNCF)")
        self._started = self._reported = time.monotonic()

    def note(self, step: str, verdict: str, passed: bool) -> None:
        """Say how a step of the search went, the gate's verdict on a line of its own
        when it failed (a terminal's 80 columns)."""
        said = "passed" if passed else f"failed:\n      {verdict}"
        self._report(f"    {step} ({self.elapsed_s:.0f} s): {said}")

    def tick(self) -> None:
        self.evaluations += 1
        now = time.monotonic()
        if now - self._reported >= self._every_s:
            self._reported = now
            self._report(
                f"    accuracy search: {self.elapsed_s:.0f} s of {self.budget_s:g} s, "
                f"{self.evaluations} evaluations"
            )
        if self.elapsed_s > self.budget_s:
            raise SearchOverBudget(
                f"stopped at its {self.budget_s:g} s budget after {self.evaluations} evaluations"
            )

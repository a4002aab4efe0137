"""Targets checked against measured figures, and the JSON results file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.console import log

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "bench-results"


@dataclass
class Check:
    name: str
    value: float
    target: float
    higher_is_better: bool
    unit: str = ""

    @property
    def passed(self) -> bool:
        if self.value != self.value:  # NaN
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def row(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        verdict = "PASS" if self.passed else "MISS"
        return (
            f"| {self.name} | {self.value:.2f}{self.unit} | {sign} {self.target:g}{self.unit} "
            f"| **{verdict}** |"
        )


def write_results(script: str, payload: dict[str, Any]) -> Path:
    """`bench-results/<script>-<time>.json` at the repository root."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{script}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    log(f"wrote {path.relative_to(REPO_ROOT)}")
    return path

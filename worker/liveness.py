"""Per-worker liveness on the local disk, for `worker --check` (Kubernetes' liveness
probe): a file per worker, touched only while the worker makes progress (waiting for
work, or finishing batches), so a hung engine or a stuck loop turns the probe red. Redis
is not consulted: an outage of Redis must not restart every worker."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from resnet_serve.shared.settings import Settings


def liveness_file(settings: Settings, worker_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", worker_id)
    return settings.run_dir / f"worker-{settings.model}-{safe}.heartbeat"


class Liveness:
    """The file of one worker; it holds the worker's pid, so a probe can tell a dead
    worker's leftover file from a live worker that stopped making progress."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        self.path = liveness_file(settings, worker_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def beat(self) -> None:
        self.path.write_text(str(os.getpid()))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def max_age_s(settings: Settings) -> float:
    return max(3 * settings.heartbeat_interval_s, 5.0)


def _pid_alive(path: Path) -> bool:
    try:
        os.kill(int(path.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _files(settings: Settings, any_model: bool) -> list[Path]:
    if settings.worker_id:
        return [liveness_file(settings, settings.worker_id)]
    files = settings.run_dir.glob(f"worker-{'*' if any_model else settings.model}-*.heartbeat")
    return [p for p in files if _pid_alive(p)]


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def workers_live(settings: Settings, any_model: bool = False) -> bool:
    """For `worker --check`: with `worker_id`, that worker's file is fresh; without, at
    least one worker (of this model, or of any with `any_model`) runs here and every
    running one is fresh."""
    files = _files(settings, any_model)
    return bool(files) and all(_age_s(p) < max_age_s(settings) for p in files)


def live_summary(settings: Settings, any_model: bool = False) -> str:
    """What `worker --check` prints when it passes: which workers, how fresh."""
    files = sorted(_files(settings, any_model))
    return "live: " + ", ".join(f"{p.stem} ({_age_s(p):.0f} s ago)" for p in files)


def why_not_live(settings: Settings, any_model: bool = False) -> str:
    """Why `worker --check` fails, for the person reading the probe's output."""
    files = _files(settings, any_model)
    if not files or all(_age_s(p) == float("inf") for p in files):
        which = "of any model" if any_model else f"for model {settings.model!r}"
        return (
            f"no live worker {which} runs with this home directory "
            f"({settings.run_dir}; check the worker's own --model, --worker-id and "
            "RESNET_SERVE_HOME_DIR)"
        )
    stale = [p for p in files if _age_s(p) >= max_age_s(settings)]
    ages = ", ".join(f"{p.name} {_age_s(p):.0f} s" for p in stale)
    return (
        f"a worker made no progress for longer than {max_age_s(settings):g} s ({ages}): "
        "its engine or loop is stuck"
    )

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


def workers_live(settings: Settings) -> bool:
    """For `worker --check`: with `worker_id`, that worker's file is fresh; without, at
    least one worker of this model runs here and every running one is fresh."""
    if settings.worker_id:
        files = [liveness_file(settings, settings.worker_id)]
    else:
        files = [p for p in settings.run_dir.glob(f"worker-{settings.model}-*.heartbeat")]
        files = [p for p in files if _pid_alive(p)]
    if not files:
        return False
    now = time.time()
    try:
        return all(now - p.stat().st_mtime < max_age_s(settings) for p in files)
    except FileNotFoundError:
        return False

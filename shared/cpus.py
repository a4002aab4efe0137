"""How many cores this process may really use: the cgroup CPU quota and the affinity
mask, not the host's core count (a pod limited to 2 CPUs on a 64-core node gets 2)."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota_cpus(root: Path = _CGROUP) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`);
    None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cpus(root: Path = _CGROUP) -> int:
    """min(affinity mask, ceil(cgroup quota)), at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_quota_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def thread_count(requested: int) -> int:
    """A thread-count setting: 0 means one thread per usable core."""
    return requested or usable_cpus()


def cpu_model_name() -> str:
    """This CPU's model name, as /proc/cpuinfo gives it ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "unknown"

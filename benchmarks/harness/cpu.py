"""CPU and memory meters from /proc: per process, and for the rest of this machine."""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.console import log

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of process `pid` (0.0 once it is gone), or of one of its
    threads; `thread=pid` is the main thread (a server's event loop)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, field_name: str) -> int:
    """A `/proc/<pid>/status` memory field (VmRSS, VmHWM, ...) in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class CpuSample:
    wall: float
    busy_s: float  # all CPUs of this machine, not idle and not stolen
    steal_s: float  # taken by the hypervisor for other guests
    own_s: float  # this benchmark, its finished children and the live server


class NoiseMeter:
    """CPU that processes other than this benchmark's use while it measures (this is a
    shared two-core machine), and a gate that waits for them to go quiet first."""

    def __init__(self, threshold_cores: float, max_wait_s: float) -> None:
        self.threshold_cores = threshold_cores
        self.max_wait_s = max_wait_s
        self.server_pid: int | None = None
        self.waited_s = 0.0

    def sample(self) -> CpuSample:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        if self.server_pid is not None:
            own += cpu_seconds(self.server_pid)
        busy = (user + nice + system + irq + softirq) / TICK
        return CpuSample(time.perf_counter(), busy, steal / TICK, own)

    @staticmethod
    def foreign_cores(a: CpuSample, b: CpuSample) -> float:
        """Cores busy with other processes between two samples (steal included)."""
        wall = b.wall - a.wall
        other = (b.busy_s - a.busy_s) - (b.own_s - a.own_s) + (b.steal_s - a.steal_s)
        return max(other, 0.0) / wall if wall > 0 else 0.0

    def wait_quiet(self) -> float:
        """Block until other processes use < threshold cores over one second (or the
        wait runs out); returns the foreign load of the last window. No wait at all
        when max_wait_s is 0."""
        if self.max_wait_s <= 0:
            return 0.0
        start = time.monotonic()
        while True:
            before = self.sample()
            time.sleep(1.0)
            foreign = self.foreign_cores(before, self.sample())
            waited = time.monotonic() - start
            if foreign < self.threshold_cores or waited >= self.max_wait_s:
                self.waited_s += waited - 1.0
                if foreign >= self.threshold_cores:
                    log(f"  machine still busy ({foreign:.2f} foreign cores); measuring anyway")
                return foreign
            if waited < 1.5:
                log(f"  waiting for other processes to go quiet ({foreign:.2f} cores busy)")

    @contextmanager
    def phase(self, into: dict[str, float], name: str) -> Iterator[None]:
        """Gate on quiet, then record the foreign load during the block as into[name]."""
        self.wait_quiet()
        before = self.sample()
        yield
        into[name] = self.foreign_cores(before, self.sample())

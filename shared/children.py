"""Helper processes die with their parent. A gateway or worker that is killed (SIGKILL,
the OOM killer) or exits on SIGTERM must not leave its pool processes running under PID 1
for good, nor, through them, multiprocessing's resource tracker."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """A spawned helper's initializer: the kernel sends it SIGKILL when the thread that
    started it exits (Linux; elsewhere a no-op). Start helpers from a long-lived thread."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        return  # not fatal: the helper then outlives a killed parent, as before
    if os.getppid() == 1:  # the parent died before the call above: nothing would tell us
        os._exit(1)

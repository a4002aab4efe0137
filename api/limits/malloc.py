"""glibc's allocator, told to give memory back.

glibc serves large blocks (decoded images: tens of MB) with mmap and returns them on
free, but its mmap threshold grows with every such free (up to 32 MB on 64-bit), after
which the same blocks come from the heap arenas and stay resident after a burst. Fixing
the threshold and trimming after large frees keeps RSS near its idle level.

The threshold is 4 MiB, above a photo's draft decode (a 3000x2000 JPEG decodes to
750x500, 1.5 MB in Pillow's 4 bytes a pixel): at 1 MiB every such image took fresh
pages from the kernel and gave them back (page faults, zeroing, munmap), which cost
7-8% of the throughput on camera-sized uploads (interleaved trials, 2026-12-07).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024
ARENA_MAX = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - only glibc has these
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Fixed mmap and trim thresholds, few arenas. False where the libc is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )
    log.debug("glibc allocator tuned: %s", ok)
    return ok


def trim() -> None:
    """Hand freed heap pages back to the kernel (cheap; call when a burst is over)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)

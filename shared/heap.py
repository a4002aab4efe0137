"""Python's cycle collector, kept off the event loop's critical path.

A full collection walks every object the collector tracks: ~100,000 after start-up
(FastAPI's routes and schemas, the engines' and gRPC's bindings), ~50 ms on two
cores, during which the event loop answers nothing. Those objects live as long as the
process, so once start-up is over they are collected one last time and frozen (moved
out of the collector's generations): later collections, Python's own or the gRPC
server's after large messages, walk only what was made since. Measured:
docs/reliability.md ("The cycle collector").
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Collect once, then leave everything alive now out of future collections. Call it
    when start-up is over (model loaded, connections made), before serving."""
    start = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "cycle collector: %d start-up objects frozen (%.0f ms)",
        gc.get_freeze_count(),
        (time.perf_counter() - start) * 1000,
    )

"""The hung-inference watchdog in a real process that is stopped (SIGSTOP, as a paused
VM) in the middle of an engine call: the stop is not counted as inference time. A
genuinely long call still trips it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

# An engine call that needs `call_s` of CPU time in a thread (as an engine does), its
# end reported to the loop as the runner's completion callback is; the watchdog's limit
# is 6 s. Prints what the watchdog said, if anything.
SCRIPT = """
import asyncio, sys, threading, time
from types import SimpleNamespace
from resnet_serve.shared.settings import Settings
from resnet_serve.worker.watchdog import hung_inference

def engine(loop, runner, call_s):
    while time.thread_time() < call_s:
        sum(range(1000))
    loop.call_soon_threadsafe(setattr, runner, "inferring_since", None)

async def main(call_s):
    runner = SimpleNamespace(inferring_since=time.monotonic(), slowest_batch_s=0.1)
    loop = asyncio.get_running_loop()
    threading.Thread(target=engine, args=(loop, runner, call_s), daemon=True).start()
    watchdog = asyncio.ensure_future(hung_inference(runner, Settings(inference_timeout_s=6)))
    print("started", flush=True)
    while not watchdog.done() and runner.inferring_since is not None:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.6)  # the watchdog's next look, after the call
    print(watchdog.result() if watchdog.done() else "quiet", flush=True)

asyncio.run(main(float(sys.argv[1])))
"""


def run(call_s: float, stop_for_s: float) -> str:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(call_s)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    if stop_for_s:
        time.sleep(1)
        process.send_signal(signal.SIGSTOP)
        time.sleep(stop_for_s)
        process.send_signal(signal.SIGCONT)
    out, _ = process.communicate(timeout=60)
    return out.strip()


def test_a_stop_during_an_engine_call_is_not_a_hung_inference() -> None:
    # 1.5 s of CPU fits the 6 s limit even on a busy machine; the stop alone is 8 s.
    assert run(call_s=1.5, stop_for_s=8) == "quiet"


@pytest.mark.parametrize("stop_for_s", [0, 3])
def test_a_call_over_the_limit_still_trips_it(stop_for_s: float) -> None:
    assert run(call_s=30, stop_for_s=stop_for_s).startswith("an engine call has run")

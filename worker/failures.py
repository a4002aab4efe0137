"""Why a worker stops for good, and with which exit status."""

from __future__ import annotations

import asyncio

from resnet_serve.worker.runner import EngineBroken


class WorkerFailed(RuntimeError):
    """The worker cannot go on (broken engine, hung inference, impossible settings);
    its jobs were handed back. `exit_code` is the process's."""

    def __init__(self, message: str, *, exit_code: int = 3, hung: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.hung = hung


def failure_of(task: asyncio.Task[object]) -> WorkerFailed:
    if task.get_name() == "watchdog":
        return WorkerFailed(f"inference hung: {task.result()}", hung=True)
    exc = task.exception() if not task.cancelled() else None
    if isinstance(exc, EngineBroken):
        return WorkerFailed(f"the engine is broken: {exc}")
    return WorkerFailed(f"worker task {task.get_name()} stopped: {exc!r}")

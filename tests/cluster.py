"""Distributed mode under test: `resnet-serve api` and `worker` processes around a real
redis-server (fixtures `redis_server` and `resnet_artifact` in tests/conftest.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.images import crops, encode
from tests.redis_server import RedisServer
from tests.servers import Server, Worker, run_server, start_worker, stop_process

NAMESPACE = "resnet-serve"
MODEL = "resnet18"
RANDOM = ("--weights", "random")


def wait_until(condition: Callable[[], object], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def registry_key(model: str = MODEL) -> str:
    """Sorted set of the workers registered for `model` (worker id -> lapse time)."""
    return f"{NAMESPACE}:workers:{model}"


@contextmanager
def workers(
    home: Path,
    logs: Path,
    redis: RedisServer,
    *ids: str,
    args: tuple[str, ...] = RANDOM,
    model: str = MODEL,
    **env: str,
) -> Iterator[list[Worker]]:
    """Start workers and wait until each has announced itself in Redis."""
    started = [start_worker(home, logs, redis.url, i, *args, **env) for i in ids]
    try:
        client = redis.client()
        for worker in started:

            def announced(w: Worker = worker) -> bool:
                assert w.process.poll() is None, f"worker exited:\n{w.log()}"
                return client.zscore(registry_key(model), w.worker_id) is not None

            wait_until(announced, 120, f"worker {worker.worker_id}")
        yield started
    finally:
        for worker in started:
            stop_process(worker.process)


@contextmanager
def gateway(home: Path, logs: Path, redis: RedisServer, **env: str) -> Iterator[Server]:
    with run_server(home, logs, command_name="api", redis_url=redis.url, **env) as server:
        yield server


@contextmanager
def cluster(
    home: Path, logs: Path, redis: RedisServer, worker_ids: tuple[str, ...] = ("w1",), **env: str
) -> Iterator[tuple[Server, list[Worker]]]:
    """Workers first (a gateway is ready once a model is announced), then one gateway."""
    with ExitStack() as stack:
        started = stack.enter_context(workers(home, logs, redis, *worker_ids, **env))
        server = stack.enter_context(gateway(home, logs, redis, **env))
        yield server, started


def classify(server: Server, data: bytes, timeout_s: float = 60) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify",
        content=data,
        headers={"content-type": "image/png"},
        timeout=timeout_s,
    )


def images(count: int, seed: int = 0) -> list[bytes]:
    return [encode(view, "PNG") for view in crops(count, seed=seed)]


def classify_all(server: Server, data: list[bytes]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(data)) as pool:
        return list(pool.map(lambda d: classify(server, d), data))


def pending_count(redis: RedisServer, consumer: str | None = None) -> int:
    client = redis.client()
    stream = f"{NAMESPACE}:jobs:{MODEL}"
    if not client.exists(stream):
        return 0
    entries = client.xpending_range(stream, "workers", "-", "+", 1000, consumername=consumer)
    return len(entries)


def fault_settings(latency_ms: float = 100, **settings: str) -> dict[str, str]:
    """Settings for the TEST-ONLY fault-injecting engine plug-in (tests/fault_engine/):
    fixed batch time, failures on demand through `FAULT_ENGINE_CONTROL_FILE`."""
    # The response cache off: repeated images must reach the workers.
    base = {
        "engine": "fault",
        "FAULT_ENGINE_LATENCY_MS": str(latency_ms),
        "response_cache_entries": "0",
    }
    return {**base, **settings}


def set_fault(control: Path, mode: str, latency_ms: float | None = None) -> None:
    body: dict[str, object] = {"mode": mode}
    if latency_ms is not None:
        body["latency_ms"] = latency_ms
    control.write_text(json.dumps(body))


def gateway_id(server: Server) -> str:
    """The id a gateway logs at start (its reply list is `...:reply:<id>`)."""
    found = re.search(r"gateway ([0-9a-f]+) using Redis", server.log())
    assert found, server.log()
    return found.group(1)

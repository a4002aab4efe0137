"""Distributed mode as an operator meets it: a gateway serves the models live workers
announce beside its configured ones, shows each model's workers one by one, and a
model no worker serves is said plainly (503 no_workers), at once or after the
scale-from-zero wait, and to requests already waiting when its last worker goes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.cluster import MODEL, classify, fault_settings, gateway, images, wait_until, workers
from tests.redis_server import RedisServer
from tests.servers import server_env

OTHER = "efficientnet_lite0"  # announced by a worker, never configured on the gateway
LITE = ("--model", OTHER)  # the fault engine serves any name: no artifact, no weights


def post(url: str, model: str, data: bytes, timeout_s: float = 60) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/classify?model={model}",
        content=data,
        headers={"content-type": "image/png"},
        timeout=timeout_s,
    )


def test_announced_models_are_served_and_workers_listed_one_by_one(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = fault_settings(20, heartbeat_interval_s="0.5")
    with (
        workers(home, logs, redis_server, "lite-a", "lite-b", args=LITE, model=OTHER, **settings),
        gateway(home, logs, redis_server, **settings) as server,  # configured: resnet18
    ):
        wait_until(lambda: post(server.url, OTHER, images(1)[0]).status_code == 200, 20, OTHER)
        listed = {m["name"]: m for m in httpx.get(f"{server.url}/v1/models", timeout=10).json()}
        assert set(listed) == {MODEL, OTHER}
        announced = listed[OTHER]
        assert sorted(w["worker_id"] for w in announced["workers"]) == ["lite-a", "lite-b"]
        assert {(w["engine"], w["precision"]) for w in announced["workers"]} == {("fault", "fp32")}
        assert announced["version"] == "fault"  # as the workers describe it, not "unknown"
        assert listed[MODEL]["workers"] == []
        v2 = httpx.get(f"{server.url}/v2/models/{OTHER}", timeout=10).json()
        assert len(v2["workers"]) == 2
        assert httpx.get(f"{server.url}/v2/models/{OTHER}/ready", timeout=10).status_code == 200
        # The configured model has no worker: said at once, with the models served.
        started = time.monotonic()
        refused = classify(server, images(1)[0])
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "no_workers"
        assert "Retry-After" in refused.headers
        assert time.monotonic() - started < 2
        # The refusal is demand: workers_needed asks an autoscaler for a first worker.
        wait_until(lambda: server.metric("resnet_serve_workers_needed", model=MODEL) == 1, 10)
        not_ready = httpx.get(f"{server.url}/v2/models/{MODEL}/ready", timeout=10)
        assert not_ready.status_code == 503
        assert not_ready.json() == {"name": MODEL, "ready": False}
        unknown = post(server.url, "resnet50", images(1)[0])
        assert unknown.status_code == 404
        assert MODEL in unknown.text
        assert OTHER in unknown.text


def test_a_scale_from_zero_wait_lets_a_request_meet_its_first_worker(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = fault_settings(20, heartbeat_interval_s="0.5")
    with (
        gateway(home, logs, redis_server, scale_from_zero_wait_s="60", **settings) as server,
        ThreadPoolExecutor(1) as pool,
    ):
        waiting = pool.submit(classify, server, images(1)[0])
        # While it waits, workers_needed says 1: what wakes KEDA's first worker.
        wait_until(lambda: server.metric("resnet_serve_workers_needed", model=MODEL) == 1, 10)
        assert not waiting.done()
        with workers(home, logs, redis_server, "first", **settings):
            assert waiting.result(timeout=60).status_code == 200


def test_requests_waiting_when_the_last_worker_goes_hear_no_workers(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """The worker freezes with requests in flight; its registration lapses (3 heartbeat
    intervals); the requests get no_workers then, long before their 30 s deadline."""
    settings = fault_settings(200, heartbeat_interval_s="0.5", request_timeout_s="30")
    with (
        workers(home, logs, redis_server, "frozen", **settings) as (frozen,),
        gateway(home, logs, redis_server, **settings) as server,
        ThreadPoolExecutor(4) as pool,
    ):
        wait_until(lambda: classify(server, images(1)[0]).status_code == 200, 20, "a worker")
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            answers = list(pool.map(lambda d: classify(server, d), images(4, seed=5)))
            took = time.monotonic() - started
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        assert [a.json()["error"]["code"] for a in answers] == ["no_workers"] * 4
        assert took < 12, took


def test_worker_check_without_a_model_passes_for_any_worker_here_and_says_which(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = fault_settings(20, heartbeat_interval_s="0.5")
    env = server_env(home, redis_url=redis_server.url, **settings)
    check = [sys.executable, "-m", "resnet_serve", "worker", "--check"]
    with workers(home, logs, redis_server, "lite", args=LITE, model=OTHER, **settings) as (lite,):
        wait_until(lambda: "metrics on http://" in lite.log(), 10, "the metrics port logged")
        passed = subprocess.run(check, env=env, capture_output=True, text=True, check=False)
        assert passed.returncode == 0, passed.stderr
        assert f"live: worker-{OTHER}-lite (" in passed.stdout
        other = subprocess.run(
            [*check, "--model", MODEL], env=env, capture_output=True, text=True, check=False
        )
        assert other.returncode == 1
        assert f"no live worker for model {MODEL!r}" in other.stderr

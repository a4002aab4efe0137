"""Distributed mode: gateways and workers joined by a real Redis, over real HTTP."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.cluster import (
    MODEL,
    NAMESPACE,
    classify,
    classify_all,
    cluster,
    fault_settings,
    gateway,
    images,
    pending_count,
    wait_until,
    workers,
)
from tests.images import jpeg
from tests.redis_server import RedisServer
from tests.servers import Server, frozen_objects, stop_process

pytestmark = pytest.mark.usefixtures("resnet_artifact")
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_real_weights_give_the_same_answer_as_standalone(
    home: Path, logs: Path, redis_server: RedisServer, lite_server: Server
) -> None:
    lite = ("--model", "efficientnet_lite0")
    with (
        workers(home, logs, redis_server, "lite", args=lite, model="efficientnet_lite0"),
        gateway(home, logs, redis_server, model="efficientnet_lite0") as server,
    ):
        photo = jpeg("chelsea")
        distributed = classify(server, photo).json()
        standalone = classify(lite_server, photo).json()
        assert distributed["predictions"][0]["label"] in CAT_CLASSES
        assert [p["index"] for p in distributed["predictions"]] == [
            p["index"] for p in standalone["predictions"]
        ]
        np.testing.assert_allclose(
            [p["score"] for p in distributed["predictions"]],
            [p["score"] for p in standalone["predictions"]],
            atol=1e-5,
        )


def test_two_workers_share_the_stream_and_every_request_is_answered_once(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    with cluster(home, logs, redis_server, ("w1", "w2")) as (server, (w1, w2)):
        responses = classify_all(server, images(48, seed=1))
        assert [r.status_code for r in responses] == [200] * 48
        request_ids = {r.json()["request_id"] for r in responses}
        assert len(request_ids) == 48
        assert w1.metric("resnet_serve_batch_size_count") > 0
        assert w2.metric("resnet_serve_batch_size_count") > 0
        ran = w1.metric("resnet_serve_batch_size_sum") + w2.metric("resnet_serve_batch_size_sum")
        assert ran == 48  # each job ran exactly once (warm-up is not counted)
        assert pending_count(redis_server) == 0
        assert redis_server.client().xlen(f"{NAMESPACE}:jobs:{MODEL}") == 0  # acked = deleted
        # Each process exports its own role's families, not the other's at zero.
        gateway_text = httpx.get(f"{server.url}/metrics", timeout=10).text
        worker_text = httpx.get(w1.metrics_url, timeout=10).text
        gateway_only = ("resnet_serve_requests_total", "resnet_serve_workers")
        worker_only = (
            "resnet_serve_inference_duration_seconds",
            "resnet_serve_reclaimed_jobs_total",
        )
        for family in gateway_only:
            assert f"# TYPE {family} " in gateway_text
            assert f"# TYPE {family} " not in worker_text
        for family in worker_only:
            assert f"# TYPE {family} " in worker_text
            assert f"# TYPE {family} " not in gateway_text
        # Each process froze its start-up objects out of the cycle collector, whose full
        # collections would otherwise stop its event loop for ~70 ms (shared/heap.py).
        for process in (server, w1, w2):
            assert frozen_objects(process.log()) >= 20_000


def test_two_gateways_behind_one_redis_both_answer(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    with (
        cluster(home, logs, redis_server) as (first, _),
        gateway(home, logs, redis_server) as second,
    ):
        data = images(16, seed=2)
        with ThreadPoolExecutor(16) as pool:
            responses = list(
                pool.map(lambda i: classify((first, second)[i % 2], data[i]), range(16))
            )
        assert [r.status_code for r in responses] == [200] * 16
        # The same image through either gateway gives the same answer.
        assert (
            classify(first, data[0]).json()["predictions"]
            == (classify(second, data[0]).json()["predictions"])
        )


def test_jobs_of_a_killed_worker_are_reclaimed_and_answered(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    # The fault engine's fixed batch time fits any visibility timeout on any machine.
    settings = fault_settings(100, visibility_timeout_s="1", request_timeout_s="30")
    with cluster(home, logs, redis_server, ("doomed",), **settings) as (server, (doomed,)):
        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(classify, server, d) for d in images(24, seed=3)]
            wait_until(lambda: pending_count(redis_server, "doomed") > 0, what="jobs taken")
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait()
            with workers(home, logs, redis_server, "rescuer", **settings) as (rescuer,):
                responses = [f.result() for f in futures]
                reclaimed = rescuer.metric("resnet_serve_reclaimed_jobs_total")
        assert [r.status_code for r in responses] == [200] * 24
        assert reclaimed > 0


def test_jobs_whose_deadline_passed_while_no_worker_lived_get_504_and_never_run(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = fault_settings(100, visibility_timeout_s="1", request_timeout_s="2")
    with cluster(home, logs, redis_server, ("doomed",), **settings) as (server, (doomed,)):
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
        started = time.monotonic()
        responses = classify_all(server, images(6, seed=4))
        assert time.monotonic() - started < 5  # answered at the deadline, not hung
        assert [r.status_code for r in responses] == [504] * 6
        assert {r.json()["error"]["code"] for r in responses} == {"deadline_exceeded"}
        with workers(home, logs, redis_server, "late", **settings) as (late,):
            wait_until(lambda: late.metric("resnet_serve_expired_jobs_total") == 6, 30)
            assert late.metric("resnet_serve_batch_size_count") == 0  # none of them ran
        assert redis_server.client().xlen(f"{NAMESPACE}:jobs:{MODEL}") == 0


def test_a_job_the_engine_keeps_failing_is_dead_lettered_and_answered(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """A tensor the engine rejects (wrong size for the model), written straight onto the
    stream as a misbehaving gateway would, next to good requests in the same batches."""
    settings = fault_settings(
        50, visibility_timeout_s="0.5", max_deliveries="2", max_batch_wait_ms="50"
    )
    with cluster(home, logs, redis_server, **settings) as (server, (worker,)):
        client = redis_server.client()
        header = {
            "v": 1,
            "job_id": "poison",
            "request_id": "poison-request",
            "model": MODEL,
            "shape": [200, 200, 3],
            "dtype": "uint8",
            "top_k": 3,
            "deadline": time.time() + 30,
            "enqueued_at": time.time(),
            "reply_to": "test-replies",
        }
        tensor = np.zeros((200, 200, 3), np.uint8).tobytes()
        with ThreadPoolExecutor(8) as pool:
            good = [pool.submit(classify, server, d) for d in images(7, seed=5)]
            client.xadd(
                f"{NAMESPACE}:jobs:{MODEL}", {"header": json.dumps(header), "tensor": tensor}
            )
            assert [f.result().status_code for f in good] == [200] * 7
        reply = client.blpop(["test-replies"], timeout=20)
        assert reply is not None, worker.log()
        error = json.loads(reply[1])["error"]
        assert error["code"] == "dead_lettered"
        assert "2 deliveries" in error["message"]
        dead = client.xrange(f"{NAMESPACE}:dead:{MODEL}")
        assert len(dead) == 1
        assert json.loads(dead[0][1][b"header"])["job_id"] == "poison"
        assert worker.metric("resnet_serve_dead_lettered_total") == 1
        wait_until(lambda: server.metric("resnet_serve_dead_letters", model=MODEL) == 1, 10)
        assert client.xlen(f"{NAMESPACE}:jobs:{MODEL}") == 0


def test_redis_outage_gives_fast_503s_and_both_sides_recover(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    with cluster(home, logs, redis_server) as (server, (worker,)):
        data = images(2, seed=6)
        assert classify(server, data[0]).status_code == 200
        redis_server.stop()
        started = time.monotonic()
        response = classify(server, data[0])
        assert time.monotonic() - started < 2
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "broker_unavailable"
        assert "retry-after" in response.headers
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, 10)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        redis_server.start()  # same port, empty: nothing survives, everything is recreated
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, 30, "readyz")
        assert classify(server, data[1]).status_code == 200
        assert worker.process.poll() is None


def test_sigterm_on_a_worker_finishes_and_acknowledges_its_batch(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = fault_settings(100, request_timeout_s="30", visibility_timeout_s="1")
    with cluster(home, logs, redis_server, ("leaving",), **settings) as (server, (leaving,)):
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(classify, server, d) for d in images(16, seed=7)]
            wait_until(lambda: pending_count(redis_server, "leaving") > 0, what="jobs taken")
            leaving.process.send_signal(signal.SIGTERM)
            assert leaving.process.wait(timeout=20) == 0
            assert pending_count(redis_server, "leaving") == 0  # all it took were acked
            with workers(home, logs, redis_server, "next", **settings) as (following,):
                responses = [f.result() for f in futures]
                assert following.metric("resnet_serve_reclaimed_jobs_total") == 0
        assert [r.status_code for r in responses] == [200] * 16
        assert "stopped" in leaving.log()


def test_sigterm_on_a_gateway_drains_in_flight_requests(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """Requests are held in flight (no worker runs) when the gateway gets SIGTERM; it
    keeps serving them until a worker answers, then exits. (The scale-from-zero wait
    keeps them waiting for the new worker past the old one's registration.)"""
    settings = {"request_timeout_s": "30", "scale_from_zero_wait_s": "20"}
    with cluster(home, logs, redis_server, ("first",), **settings) as (server, (first,)):
        stop_process(first.process)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(classify, server, d) for d in images(8, seed=8)]
            # 8 classify requests plus the /metrics request asking.
            wait_until(lambda: server.metric("resnet_serve_in_flight_requests") >= 9, 10)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1)
            assert server.process.poll() is None  # still draining
            with workers(home, logs, redis_server, "second", **settings):
                responses = [f.result() for f in futures]
                # uvicorn re-raises the signal once it has shut down gracefully.
                assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)
        assert [r.status_code for r in responses] == [200] * 8
        assert "Application shutdown complete" in server.log()


def test_overload_is_refused_with_retry_after_and_the_queue_stays_bounded(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = {"max_queue": "6", "request_timeout_s": "20"}
    with cluster(home, logs, redis_server, **settings) as (server, _):
        longest = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal longest
            client = redis_server.client()
            while not stop.is_set():
                longest = max(longest, client.xlen(f"{NAMESPACE}:jobs:{MODEL}"))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            started = time.monotonic()
            responses = classify_all(server, images(48, seed=9))
        finally:
            stop.set()
            watcher.join()
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503}, statuses
        rejected = [r for r in responses if r.status_code == 503]
        assert {r.json()["error"]["code"] for r in rejected} == {"queue_full"}
        assert all(int(r.headers["retry-after"]) >= 1 for r in rejected)
        assert time.monotonic() - started < 20  # accepted requests met their deadline
        assert longest <= 6


def test_password_protected_redis_and_no_secret_in_logs(
    home: Path, logs: Path, tmp_path: Path
) -> None:
    from tests.redis_server import run_redis

    secret = "s3cret-pass-7Qx"
    with (
        run_redis(tmp_path / "redis", password=secret) as redis_server,
        cluster(home, logs, redis_server) as (server, (worker,)),
    ):
        assert classify(server, images(1)[0]).status_code == 200
        redis_server.stop()
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, 10)
        redis_server.start()
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, 30)
        gateway_log, worker_log = server.log(), worker.log()
    assert "redis://:***@127.0.0.1" in gateway_log
    assert secret not in gateway_log
    assert secret not in worker_log


def test_tls_redis_with_a_password(home: Path, logs: Path, tmp_path: Path) -> None:
    from tests.redis_server import run_redis

    with run_redis(tmp_path / "redis", password="tls-pass", tls=True) as redis_server:
        assert redis_server.url.startswith("rediss://")
        ca = {"redis_ca_file": str(redis_server.ca_file)}
        with cluster(home, logs, redis_server, **ca) as (server, _):
            assert classify(server, images(1)[0]).status_code == 200

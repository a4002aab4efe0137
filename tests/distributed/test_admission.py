"""Admission before decode in distributed mode: two gateways share the queue's places
through Redis, a refused request costs no decode, and no place leaks."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.cluster import (
    MODEL,
    NAMESPACE,
    classify,
    fault_settings,
    gateway,
    images,
    wait_until,
    workers,
)
from tests.hostile import answers_to_headers_alone_under_flood, hang_up_after_sending
from tests.redis_server import RedisServer
from tests.servers import Server

pytestmark = pytest.mark.usefixtures("resnet_artifact")

MAX_QUEUE = 4


def decodes(server: Server) -> float:
    return server.metric("resnet_serve_decode_duration_seconds_count")


def test_two_gateways_admit_exactly_the_queue_and_refuse_the_rest_without_decoding(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = {
        "max_queue": str(MAX_QUEUE),
        "request_timeout_s": "60",
        "heartbeat_interval_s": "30",  # a stopped worker still counts as announced
        "response_cache_entries": "0",
    }
    with ExitStack() as stack:
        (worker,) = stack.enter_context(workers(home, logs, redis_server, "w1", **settings))
        a = stack.enter_context(gateway(home, logs, redis_server, **settings))
        b = stack.enter_context(gateway(home, logs, redis_server, **settings))
        os.kill(worker.process.pid, signal.SIGSTOP)  # nothing leaves the queue for now
        try:
            data = images(12, seed=3)
            with ThreadPoolExecutor(12) as pool:
                futures = [pool.submit(classify, a if i % 2 else b, d) for i, d in enumerate(data)]
                # Refusals come back while the admitted requests still wait in the queue.
                wait_until(lambda: sum(f.done() for f in futures) >= 12 - MAX_QUEUE, 60)
                refused = [f.result() for f in futures if f.done()]
                assert len(refused) == 12 - MAX_QUEUE
                assert all(r.status_code == 503 for r in refused), [r.text for r in refused]
                assert {r.json()["error"]["code"] for r in refused} == {"queue_full"}
                assert all("Retry-After" in r.headers for r in refused)
                # Only admitted requests were decoded.
                assert decodes(a) + decodes(b) == MAX_QUEUE
                os.kill(worker.process.pid, signal.SIGCONT)
                admitted = [f.result() for f in futures if f.result().status_code != 503]
            assert [r.status_code for r in admitted] == [200] * MAX_QUEUE
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
        client = redis_server.client()
        # Every place was either used by its job or given back.
        assert client.zcard(f"{NAMESPACE}:slots:{MODEL}") == 0


def test_refusals_answer_without_reading_or_decoding_the_upload(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """A full queue: 30 more uploads are refused; none is decoded, the places set is
    empty afterwards, and a refusal takes milliseconds, not a decode."""
    settings = {"max_queue": "1", "request_timeout_s": "60", "heartbeat_interval_s": "30"}
    with ExitStack() as stack:
        (worker,) = stack.enter_context(workers(home, logs, redis_server, "w1", **settings))
        server = stack.enter_context(gateway(home, logs, redis_server, **settings))
        os.kill(worker.process.pid, signal.SIGSTOP)
        try:
            photo = images(1, seed=5)[0]
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(classify, server, photo)
                wait_until(lambda: decodes(server) == 1, 30, "the first upload decoded")
                before = decodes(server)
                took = []
                for _ in range(30):
                    start = time.perf_counter()
                    response = httpx.post(
                        f"{server.url}/v1/classify",
                        content=photo,
                        headers={"content-type": "image/png"},
                        timeout=30,
                    )
                    took.append(time.perf_counter() - start)
                    assert response.status_code == 503
                assert decodes(server) == before
                os.kill(worker.process.pid, signal.SIGCONT)
                assert waiting.result().status_code == 200
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
        took.sort()
        print(f"refusal median {took[15] * 1000:.1f} ms, worst {took[-1] * 1000:.1f} ms")
        assert redis_server.client().zcard(f"{NAMESPACE}:slots:{MODEL}") == 0


def test_admission_across_gateways_refuses_what_would_miss_its_deadline(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """Two gateways, one worker of ~4 images/s (0.5 s batches of 2, the TEST-ONLY fault
    engine), a 4 s deadline and room for 256 in the queue: 40 clients at once get what
    can be answered in time, and 503 for the rest; nothing expires in the queue."""
    settings = fault_settings(500, max_batch="2", request_timeout_s="4")
    photo = images(1, seed=5)[0]
    with ExitStack() as stack:
        (worker,) = stack.enter_context(workers(home, logs, redis_server, "w1", **settings))
        a = stack.enter_context(gateway(home, logs, redis_server, **settings))
        b = stack.enter_context(gateway(home, logs, redis_server, **settings))
        wait_until(lambda: a.metric("resnet_serve_workers", model=MODEL) == 1, 30, "worker seen")
        wait_until(lambda: b.metric("resnet_serve_workers", model=MODEL) == 1, 30, "worker seen")

        def post(i: int) -> tuple[int, float, str]:
            start = time.perf_counter()
            response = classify(a if i % 2 else b, photo)
            code = response.json().get("error", {}).get("code", "") if response.content else ""
            return response.status_code, time.perf_counter() - start, code

        with ThreadPoolExecutor(40) as pool:
            outcomes = list(pool.map(post, range(40)))
        expired = worker.metric("resnet_serve_expired_jobs_total")
    statuses = [status for status, _, _ in outcomes]
    assert set(statuses) <= {200, 503}, statuses
    assert 4 <= statuses.count(200) <= 20, statuses
    assert {code for status, _, code in outcomes if status == 503} == {"queue_full"}
    assert max(took for status, took, _ in outcomes if status == 200) < 4  # the deadline
    assert expired == 0


def test_a_gateway_that_saw_the_queue_too_long_refuses_before_reading_a_body(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """One worker of ~4 images/s, a 4 s deadline, room for 256: under 16 clients the
    reservation script keeps saying "too late", and after each such answer the gateway
    refuses for a moment at the edge, as an upload's headers arrive, without reading its
    body or asking Redis (an upload sent with no body is answered 503 at once)."""
    settings = fault_settings(500, max_batch="2", request_timeout_s="4")
    photo = images(1, seed=7)[0]
    with ExitStack() as stack:
        stack.enter_context(workers(home, logs, redis_server, "w1", **settings))
        server = stack.enter_context(gateway(home, logs, redis_server, **settings))
        wait_until(lambda: server.metric("resnet_serve_workers", model=MODEL) == 1, 30, "worker")
        port = int(server.url.rsplit(":", 1)[1])
        refused = answers_to_headers_alone_under_flood(
            lambda: classify(server, photo), 16, port, len(photo), wanted=3
        )
    assert len(refused) == 3
    for head, body, took in refused:
        assert head.startswith(b"HTTP/1.1 503"), head
        assert b'"queue_full"' in body
        assert b"retry-after:" in head.lower()
        assert took < 1.0  # at once, not after a 2 s wait for the body


def test_jobs_whose_client_left_are_skipped_by_the_worker(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """Two requests keep the worker busy (0.5 s batches of 1); four clients send theirs
    and hang up while queued; an honest one comes last. The gateway tells the workers;
    the four are skipped before inference (counted), only three images are inferred."""
    settings = fault_settings(500, max_batch="1", request_timeout_s="20")
    photo = images(1, seed=6)[0]
    with ExitStack() as stack:
        (worker,) = stack.enter_context(workers(home, logs, redis_server, "w1", **settings))
        server = stack.enter_context(gateway(home, logs, redis_server, **settings))
        port = int(server.url.rsplit(":", 1)[1])
        with ThreadPoolExecutor(3) as pool:
            busy = [pool.submit(classify, server, photo) for _ in range(2)]
            time.sleep(0.2)
            hang_up_after_sending(port, photo, clients=4, after_s=0.3)
            time.sleep(0.1)
            honest = pool.submit(classify, server, photo)
            assert [f.result().status_code for f in busy] == [200, 200]
            assert honest.result().status_code == 200

        def skipped() -> float:
            return worker.metric("resnet_serve_cancelled_jobs_total", model=MODEL)

        wait_until(lambda: skipped() == 4, 15, "four skipped jobs")
        assert worker.metric("resnet_serve_batch_size_sum") == 3
        assert server.metric("resnet_serve_requests_total", status="499") == 4

"""Overload against a real standalone `serve`: admission is decided before decoding, so
every decode belongs to a job that entered the queue, and refusals are 503s."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cluster import fault_settings, wait_until
from tests.hostile import (
    answers_to_headers_alone_under_flood,
    hang_up_after_sending,
    read_answer,
)
from tests.images import jpeg
from tests.servers import Server, run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_queue(home: Path, logs: Path) -> Iterator[Server]:
    with run_server(
        home,
        logs,
        "--weights",
        "random",
        "--max-batch",
        "1",
        max_queue="2",
        response_cache_entries="0",
    ) as server:
        yield server


def classify(server: Server, photo: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify",
        content=photo,
        headers={"content-type": "image/jpeg"},
        timeout=60,
    )


def test_refused_uploads_are_never_decoded(small_queue: Server) -> None:
    photo = jpeg("chelsea")

    with ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(lambda _: classify(small_queue, photo), range(96)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses
    assert 200 in statuses
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "queue_full"
            assert "Retry-After" in response.headers
    decodes = small_queue.metric("resnet_serve_decode_duration_seconds_count")
    admitted = small_queue.metric("resnet_serve_batch_size_sum") + small_queue.metric(
        "resnet_serve_expired_jobs_total"
    )
    assert decodes == admitted == statuses.count(200)


def run_slow_engine(home: Path, logs: Path) -> contextlib.AbstractContextManager[Server]:
    """A 0.5 s batch of at most 2 (the TEST-ONLY fault engine: a fixed batch time on any
    machine), a 4 s deadline and a queue far larger than the deadline allows."""
    return run_server(
        home,
        logs,
        max_batch="2",
        request_timeout_s="4",
        max_queue="256",
        **fault_settings(500),
    )


@pytest.fixture(scope="module")
def slow_engine(home: Path, logs: Path) -> Iterator[Server]:
    with run_slow_engine(home, logs) as server:
        yield server


@pytest.fixture
def slow_engine_alone(home: Path, logs: Path) -> Iterator[Server]:
    """The same, for a test whose abandoned connections must not reach another's counts."""
    with run_slow_engine(home, logs) as server:
        yield server


def test_admission_refuses_what_would_miss_its_deadline(slow_engine: Server) -> None:
    """40 clients at once against ~4 images/s and a 4 s deadline: the queue could take
    all of them, but only what can be answered in time is admitted. Nothing expires in
    the queue (no 504), admitted requests are answered well inside their deadline, and
    the refused ones get 503 with a Retry-After at once."""
    photo = jpeg("chelsea")

    def post(_: int) -> tuple[int, float, httpx.Response]:
        start = time.perf_counter()
        response = classify(slow_engine, photo)
        return response.status_code, time.perf_counter() - start, response

    with ThreadPoolExecutor(40) as pool:
        outcomes = list(pool.map(post, range(40)))
    statuses = [status for status, _, _ in outcomes]
    assert set(statuses) <= {200, 503}, statuses
    assert 4 <= statuses.count(200) <= 20, statuses
    assert max(took for status, took, _ in outcomes if status == 200) < 4  # the deadline
    for status, took, response in outcomes:
        if status == 503:
            assert response.json()["error"]["code"] == "queue_full"
            assert "in time" in response.json()["error"]["message"]
            assert float(response.headers["Retry-After"]) >= 1
            assert took < 1.5
    assert slow_engine.metric("resnet_serve_expired_jobs_total") == 0


def test_a_request_too_late_for_its_deadline_is_refused_before_its_body(
    slow_engine_alone: Server,
) -> None:
    """While the work ahead would outlast a new request's deadline (the queue itself far
    from full), the edge refuses an upload as its headers arrive: 503 queue_full with a
    Retry-After, before any byte of its body is read. (Admission after reading the body
    would hold the connection until the body or its timeout came.)"""
    photo = jpeg("chelsea")
    port = int(slow_engine_alone.url.rsplit(":", 1)[1])
    refused = answers_to_headers_alone_under_flood(  # 16 clients, ~4 images/s
        lambda: classify(slow_engine_alone, photo), 16, port, len(photo), wanted=3
    )
    assert len(refused) == 3
    for head, body, took in refused:
        assert head.startswith(b"HTTP/1.1 503"), head
        assert b'"queue_full"' in body
        assert b"in time" in body
        assert b"retry-after:" in head.lower()
        assert took < 1.0  # answered at once, not after a body wait
    assert slow_engine_alone.metric("resnet_serve_expired_jobs_total") == 0


def test_requests_whose_client_left_are_skipped_before_inference(slow_engine: Server) -> None:
    """Two requests keep the engine busy; four clients send theirs and hang up while
    queued (all fit the 4 s deadline's admission); an honest one comes last. The four
    are cancelled (their jobs skipped, counted,
    499 client_closed; a job not yet queued is never made), so only three images are
    inferred and the honest request is answered after the busy batch."""
    photo = jpeg("chelsea")
    port = int(slow_engine.url.rsplit(":", 1)[1])
    inferred = slow_engine.metric("resnet_serve_batch_size_sum")
    cancelled = slow_engine.metric("resnet_serve_cancelled_jobs_total", model="resnet18")
    closed = slow_engine.metric("resnet_serve_requests_total", status="499")

    def post(_: int) -> int:
        return classify(slow_engine, photo).status_code

    with ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(post, i) for i in range(2)]
        time.sleep(0.1)
        hang_up_after_sending(port, photo, clients=4, after_s=0.2)
        time.sleep(0.1)
        honest = pool.submit(post, 2)
        assert [f.result() for f in busy] == [200, 200]
        assert honest.result() == 200

    def answered_499() -> bool:
        return slow_engine.metric("resnet_serve_requests_total", status="499") - closed == 4

    wait_until(answered_499, 10, "four requests closed by their clients")
    # What the four had queued was skipped, never inferred: only the busy and honest ran.
    skipped = slow_engine.metric("resnet_serve_cancelled_jobs_total", model="resnet18")
    assert skipped - cancelled <= 4
    assert slow_engine.metric("resnet_serve_batch_size_sum") - inferred == 3


def test_a_refused_small_upload_keeps_its_connection(small_queue: Server) -> None:
    """Refused at the edge while the queue is full, a small upload is read to its end and
    its connection serves the client's next request: a closed one would make every
    refusal cost a new connection on both sides."""
    photo = jpeg("coffee")
    port = int(small_queue.url.rsplit(":", 1)[1])
    request = (
        f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(photo)}\r\n\r\n"
    ).encode() + photo

    stop = threading.Event()

    def flood() -> None:  # keeps the queue full until the probe is done
        while not stop.is_set():
            classify(small_queue, photo)

    with ThreadPoolExecutor(24) as pool, socket.create_connection(("127.0.0.1", port)) as sock:
        floods = [pool.submit(flood) for _ in range(24)]
        edge_refusals = 0
        try:
            for _ in range(500):
                sock.sendall(request)
                head, body = read_answer(sock)  # the connection is still open
                if head.startswith(b"HTTP/1.1 503") and b"the inference queue is full" in body:
                    edge_refusals += 1
                    assert b"connection: close" not in head.lower()
                    if edge_refusals == 3:
                        break
        finally:
            stop.set()
        for future in floods:
            future.result()
    assert edge_refusals == 3

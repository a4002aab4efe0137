"""Overload against a real standalone `serve`: admission is decided before decoding, so
every decode belongs to a job that entered the queue, and refusals are 503s."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

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


def test_refused_uploads_are_never_decoded(small_queue: Server) -> None:
    photo = jpeg("chelsea")

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{small_queue.url}/v1/classify",
            content=photo,
            headers={"content-type": "image/jpeg"},
            timeout=60,
        )

    with ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(post, range(96)))
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

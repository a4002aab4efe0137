"""The Python client (resnet_serve/client/) and `predict --url` against real servers."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from resnet_serve.client import AsyncClient, Client, ServeClientError
from resnet_serve.client.retry import NO_RETRIES, RetryPolicy
from tests.images import crops, encode, jpeg
from tests.servers import Server, free_port, run_server, server_env

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def test_sync_client_classifies_like_the_raw_api(lite_server: Server, tmp_path: Path) -> None:
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(jpeg("chelsea", quality=80))
    raw = httpx.post(
        f"{lite_server.url}/v1/classify",
        params={"top_k": 4},
        content=photo.read_bytes(),
        headers={"content-type": "image/jpeg"},
    ).json()
    with Client(lite_server.url) as client:
        result = client.classify(photo, top_k=4)
        assert [p.model_dump() for p in result.predictions] == raw["predictions"]
        assert result.model == "efficientnet_lite0"
        assert CAT_CLASSES & {p.label for p in result.predictions}
        items = client.classify_batch([photo, b"plain text", jpeg("coffee")], top_k=2)
        assert [item.filename for item in items] == ["chelsea.jpg", "image", "image"]
        assert items[0].result is not None
        assert items[0].result.predictions == result.predictions[:2]
        assert items[1].error is not None
        assert items[1].error.code == "not_an_image"
        assert result.weights == "pretrained"
        (listed,) = client.models()
        assert (listed.name, listed.weights) == ("efficientnet_lite0", "pretrained")
        assert [w.worker_id for w in listed.workers] == ["standalone"]
        health = client.health()
        assert (health.live, health.ready) == (True, True)


def test_random_weights_reach_the_client_and_are_warned_about_once(
    resnet_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(resnet_server.url) as client:
        results = [client.classify(jpeg("chelsea")) for _ in range(2)]
        assert [r.weights for r in results] == ["random", "random"]
        assert client.models()[0].weights == "random"
    warnings = [r for r in caplog.records if "RANDOM weights" in r.getMessage()]
    assert len(warnings) == 1


def test_async_client(lite_server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(lite_server.url) as client:
            results = await asyncio.gather(
                *(client.classify(jpeg(name), top_k=1) for name in ("chelsea", "coffee"))
            )
            assert results[0].predictions[0].label in CAT_CLASSES
            assert results[1].predictions[0].label in {"espresso", "cup"}
            (item,) = await client.classify_batch([jpeg("rocket")])
            assert item.result is not None
            assert (await client.models())[0].input_size == 224
            assert (await client.health()).ready

    asyncio.run(main())


def test_errors_are_typed_and_not_retried(
    lite_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(lite_server.url) as client, caplog.at_level(logging.WARNING):
        with pytest.raises(ServeClientError) as unknown:
            client.classify(jpeg("chelsea"), model="resnet152")
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_model")
        assert unknown.value.request_id
        with pytest.raises(ServeClientError) as garbage:
            client.classify(b"\x00\x01not an image")
        assert (garbage.value.status, garbage.value.code) == (415, "not_an_image")
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_a_server_that_is_not_there() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout_s=2, connect_retries=0) as client:
        assert not client.health().live
        with pytest.raises(ServeClientError) as caught:
            client.classify(b"x")
    assert (caught.value.status, caught.value.code) == (0, "unreachable")


def test_503s_of_a_full_queue_are_retried_after_retry_after(
    home: Path, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = [encode(view, "PNG") for view in crops(12, seed=11)]
    patient = RetryPolicy(attempts=30, max_wait_s=5, total_s=90)
    with run_server(home, logs, "--weights", "random", "--max-batch", "1", max_queue="1") as server:
        # Without retries, the flood meets the one-slot queue: some requests get 503.
        with Client(server.url, retry=NO_RETRIES) as impatient, ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(lambda data: _try(impatient, data), images))
        assert "queue_full" in outcomes, outcomes
        rejected_before = server.metric("resnet_serve_requests_total", status="503")

        with caplog.at_level(logging.WARNING, logger="resnet_serve.client.retry"):
            with Client(server.url, retry=patient) as client, ThreadPoolExecutor(12) as pool:
                results = list(pool.map(client.classify, images))

            async def flood() -> list[str]:
                async with AsyncClient(server.url, retry=patient) as client:
                    answers = await asyncio.gather(*(client.classify(d) for d in images))
                return [a.model for a in answers]

            assert asyncio.run(flood()) == ["resnet18"] * len(images)

        assert all(r.model == "resnet18" for r in results)
        assert server.metric("resnet_serve_requests_total", status="503") > rejected_before
        retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
        assert retries
        # Retry-After is at least one second, and the client never came back sooner.
        waits = [float(message.split()[2]) for message in retries if "queue_full" in message]
        assert waits
        assert min(waits) >= 1.0


def _try(client: Client, data: bytes) -> str:
    try:
        return client.classify(data).model
    except ServeClientError as exc:
        return exc.code


def test_cli_predict_through_a_server(lite_server: Server, home: Path, tmp_path: Path) -> None:
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(jpeg("chelsea"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    command = [sys.executable, "-m", "resnet_serve", "predict", str(photo), str(notes)]
    env = server_env(home) | {"COLUMNS": "200"}
    remote = subprocess.run(
        [*command, "--url", lite_server.url, "--top-k", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote.returncode == 1, remote.stderr  # notes.txt failed
    first_row = next(line for line in remote.stdout.splitlines() if "chelsea.jpg" in line)
    assert any(label in first_row for label in CAT_CLASSES), remote.stdout
    assert "not_an_image" in remote.stdout
    assert "efficientnet_lite0 v1" in remote.stdout

    dead = subprocess.run(
        [*command, "--url", f"http://127.0.0.1:{free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.returncode == 2
    assert "unreachable" in dead.stderr or "refused" in dead.stderr

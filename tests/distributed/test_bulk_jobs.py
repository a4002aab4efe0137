"""Bulk jobs end to end: redis-server, `resnet-serve worker`, `resnet-serve api` and
`resnet-serve jobs-worker` as real processes, over real HTTP."""

from __future__ import annotations

import io
import json
import pickle
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import NAMESPACE, classify, cluster, gateway, images, wait_until, workers
from tests.redis_server import RedisServer, run_redis
from tests.servers import Server, server_env, stop_process

pytestmark = pytest.mark.usefixtures("resnet_artifact")

# The shared cluster's limits, small enough to cross in a test.
MAX_IMAGES = 8
MAX_IMAGE_BYTES = 1024 * 1024
MAX_JOB_BYTES = 4 * 1024 * 1024
LIMITS = {
    "max_bulk_images": str(MAX_IMAGES),
    "max_upload_bytes": str(MAX_IMAGE_BYTES),
    "max_bulk_bytes": str(MAX_JOB_BYTES),
}


@dataclass
class JobsWorker:
    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def check(home: Path, redis: RedisServer, worker_id: str) -> int:
    """`resnet-serve jobs-worker --check`, as a Kubernetes exec probe runs it."""
    command = [sys.executable, "-m", "resnet_serve", "jobs-worker", "--check"]
    env = server_env(home, redis_url=redis.url, worker_id=worker_id)
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


@contextmanager
def jobs_worker(
    home: Path, logs: Path, redis: RedisServer, worker_id: str, **settings: str
) -> Iterator[JobsWorker]:
    """`resnet-serve jobs-worker`, once arq has written its health-check key."""
    log_path = logs / f"jobs-worker-{worker_id}-{redis.port}.log"
    command = [sys.executable, "-m", "resnet_serve", "jobs-worker", "--worker-id", worker_id]
    env = server_env(home, redis_url=redis.url, **settings)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = JobsWorker(worker_id, process, log_path)
    try:
        client = redis.client()
        health = f"{NAMESPACE}:bulk:health-check:{worker_id}"

        def healthy() -> bool:
            assert process.poll() is None, f"jobs-worker exited:\n{started.log()}"
            return bool(client.exists(health))

        wait_until(healthy, 60, f"jobs-worker {worker_id}")
        yield started
    finally:
        stop_process(process)


@dataclass
class Bulk:
    server: Server
    redis: RedisServer


@pytest.fixture(scope="module")
def bulk(
    home: Path, logs: Path, resnet_artifact: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bulk]:
    """One worker, one gateway and one jobs-worker around their own Redis."""
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(tmp_path_factory.mktemp("bulk-redis")))
        server, _ = stack.enter_context(cluster(home, logs, redis, **LIMITS))
        stack.enter_context(jobs_worker(home, logs, redis, "jobs-1"))
        yield Bulk(server, redis)


def submit(
    server: Server,
    files: list[tuple[str, bytes]],
    key: str | None = None,
    top_k: int = 3,
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(
        f"{server.url}/v1/jobs",
        params={"top_k": top_k},
        files=[("file", (name, data)) for name, data in files],
        headers=headers,
        timeout=30,
    )


def submit_zip(server: Server, data: bytes) -> httpx.Response:
    headers = {"content-type": "application/zip"}
    return httpx.post(f"{server.url}/v1/jobs", content=data, headers=headers, timeout=30)


def finished(server: Server, location: str, timeout_s: float = 90) -> dict[str, Any]:
    """Poll the job's Location until it is done or failed."""
    seen: dict[str, Any] = {}

    def over() -> bool:
        response = httpx.get(f"{server.url}{location}", timeout=10)
        assert response.status_code == 200, response.text
        seen.update(response.json())
        return seen["status"] in ("done", "failed")

    wait_until(over, timeout_s, f"job {location}")
    return seen


def status(server: Server, location: str) -> str:
    response = httpx.get(f"{server.url}{location}", timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def zipped(*entries: tuple[str | zipfile.ZipInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def corrupt_png() -> bytes:
    whole = images(1, seed=99)[0]
    return whole[: len(whole) // 3]  # a real PNG header, then the data stops


def bulk_keys(redis: RedisServer) -> list[bytes]:
    client = redis.client()
    return [*client.scan_iter(f"{NAMESPACE}:bulk*"), *client.scan_iter("arq:*")]


def test_bad_images_are_reported_per_image_and_the_rest_classified(bulk: Bulk) -> None:
    photos = images(5, seed=11)
    files = [(f"photo{i}.png", data) for i, data in enumerate(photos)]
    files.insert(2, ("notes.txt", b"these are not the pixels you are looking for"))
    files.append(("broken.png", corrupt_png()))
    response = submit(bulk.server, files, top_k=4)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == accepted["location"] == f"/v1/jobs/{accepted['job_id']}"
    assert accepted["total"] == 7
    assert accepted["status"] == "queued"

    job = finished(bulk.server, accepted["location"])
    assert job["status"] == "done"
    assert job["error"] is None
    assert job["progress"] == {"done": 7, "failed": 2, "total": 7}
    assert job["model"] == "resnet18"
    results = job["results"]
    assert [r["filename"] for r in results] == [name for name, _ in files]
    assert [r["index"] for r in results] == list(range(7))
    assert results[2]["status"] == "failed"
    assert results[2]["error"]["code"] == "not_an_image"
    assert results[6]["status"] == "failed"
    assert results[6]["error"]["code"] == "corrupt_image"
    good = [r for r in results if r["status"] == "done"]
    assert len(good) == 5
    for result in good:
        assert result["error"] is None
        assert len(result["predictions"]) == 4
    # Same inference streams, same model: a job's answer is the interactive answer.
    interactive = classify(bulk.server, photos[0]).json()["predictions"]
    assert [p["index"] for p in results[0]["predictions"][:3]] == [p["index"] for p in interactive]
    # The finished job's upload is gone from Redis; its results stay, with a TTL.
    client = bulk.redis.client()
    job_id = accepted["job_id"]
    assert not client.exists(f"{NAMESPACE}:bulk:job:{job_id}:images")
    assert 0 < client.ttl(f"{NAMESPACE}:bulk:job:{job_id}:results") <= 86400


def test_a_zip_job_skips_directories_and_defuses_path_tricks(bulk: Bulk) -> None:
    photos = images(3, seed=12)
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = zipped(
        ("../../../etc/cron.d/evil.png", photos[0]),
        ("album/", b""),
        ("album/cat.png", photos[1]),
        ("/absolute/dog.png", photos[2]),
        (link, b"/etc/passwd"),
        ("__MACOSX/album/._cat.png", b"\x00\x05\x16\x07"),
        ("album/readme.txt", b"hello"),
    )
    response = submit_zip(bulk.server, archive)
    assert response.status_code == 202, response.text
    job = finished(bulk.server, response.headers["location"])
    assert job["status"] == "done"
    names = [r["filename"] for r in job["results"]]
    assert names == ["etc/cron.d/evil.png", "album/cat.png", "absolute/dog.png", "album/readme.txt"]
    assert [r["status"] for r in job["results"]] == ["done", "done", "done", "failed"]
    assert job["results"][3]["error"]["code"] == "not_an_image"

    # One zip sent as the only multipart file is the same job.
    multipart = submit(bulk.server, [("photos.zip", archive)])
    assert multipart.status_code == 202, multipart.text
    again = finished(bulk.server, multipart.headers["location"])
    assert [r["filename"] for r in again["results"]] == names


def test_limits_refuse_the_whole_upload_before_anything_is_stored(bulk: Bulk) -> None:
    photo = images(1, seed=13)[0]
    before = set(bulk_keys(bulk.redis))
    refusals = {
        "too many files": submit(bulk.server, [(f"{i}.png", photo) for i in range(MAX_IMAGES + 1)]),
        "too many in a zip": submit_zip(
            bulk.server, zipped(*[(f"{i}.png", photo) for i in range(MAX_IMAGES + 1)])
        ),
        "zip bomb": submit_zip(bulk.server, zipped(("zeros.png", b"\0" * 200_000_000))),
        "zip over the job's bytes": submit_zip(
            bulk.server,
            zipped(*[(f"{i}.png", b"\0" * (MAX_IMAGE_BYTES - 1)) for i in range(5)]),
        ),
        "image over the image limit": submit(
            bulk.server, [("big.png", b"\x89PNG" + b"\0" * MAX_IMAGE_BYTES)]
        ),
        "not a zip": submit_zip(bulk.server, b"PK\x03\x04 but nothing more"),
    }
    answers = {why: (r.status_code, r.json()["error"]["code"]) for why, r in refusals.items()}
    assert answers == {
        "too many files": (413, "too_many_files"),
        "too many in a zip": (413, "too_many_files"),
        "zip bomb": (413, "payload_too_large"),
        "zip over the job's bytes": (413, "payload_too_large"),
        "image over the image limit": (413, "payload_too_large"),
        "not a zip": (422, "invalid_archive"),
    }
    assert set(bulk_keys(bulk.redis)) - before <= {b"resnet-serve:bulk:health-check:jobs-1"}


def test_an_idempotency_key_returns_the_same_job_and_refuses_another_payload(bulk: Bulk) -> None:
    files = [(f"{i}.png", data) for i, data in enumerate(images(2, seed=14))]
    first = submit(bulk.server, files, key="order-1234")
    assert first.status_code == 202, first.text
    again = submit(bulk.server, files, key="order-1234")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["replayed"] is True
    assert again.headers["location"] == first.headers["location"]

    for changed in (files[:1], [(files[0][0], files[1][1]), files[1]]):
        conflict = submit(bulk.server, changed, key="order-1234")
        assert conflict.status_code == 422, conflict.text
        assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    other_top_k = submit(bulk.server, files, key="order-1234", top_k=5)
    assert other_top_k.json()["error"]["code"] == "idempotency_key_reused"

    other_key = submit(bulk.server, files, key="order-1235")
    assert other_key.status_code == 202
    assert other_key.json()["job_id"] != first.json()["job_id"]
    no_key = [submit(bulk.server, files).json()["job_id"] for _ in range(2)]
    assert len(set(no_key)) == 2
    # Replays after the job ran still find it.
    assert finished(bulk.server, first.headers["location"])["status"] == "done"
    late = submit(bulk.server, files, key="order-1234")
    assert (late.status_code, late.json()["status"]) == (200, "done")


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "9b2f4c0d1e8a4f6b8c3d5e7f9a1b2c3d"])
def test_an_unknown_job_is_a_404(bulk: Bulk, job_id: str) -> None:
    response = httpx.get(f"{bulk.server.url}/v1/jobs/{job_id}", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


def test_a_queued_job_is_json_in_redis_runs_and_expires(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    """No pickle in Redis, every key with a TTL, storage bounded, results expire."""
    settings = {"bulk_result_ttl_s": "3", "max_bulk_bytes": "400000"}
    settings["max_bulk_stored_bytes"] = settings["max_bulk_bytes"]
    files = [(f"{i}.png", data) for i, data in enumerate(images(4, seed=15))]
    assert 200_000 < sum(len(data) for _, data in files) < 400_000
    client = redis_server.client()
    with cluster(home, logs, redis_server, **settings) as (server, _):
        response = submit(server, files, key="nightly-batch")
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        location = response.headers["location"]

        # No jobs-worker yet: the job waits in arq's queue, as JSON.
        assert check(home, redis_server, "jobs-2") == 1
        queued = httpx.get(f"{server.url}{location}", timeout=10).json()
        assert (queued["status"], queued["progress"]["done"]) == ("queued", 0)
        assert client.zscore(f"{NAMESPACE}:bulk", job_id) is not None
        raw = client.get(f"arq:job:{job_id}")
        assert raw is not None
        assert raw[:1] != pickle.PROTO  # what every pickle since protocol 2 starts with
        assert json.loads(raw)["a"] == [job_id]
        images_key = f"{NAMESPACE}:bulk:job:{job_id}:images"
        assert client.hlen(images_key) == 4
        for key in bulk_keys(redis_server):
            assert client.ttl(key) > 0, f"{key!r} has no TTL"

        # Uploads waiting in Redis are bounded: a second job does not fit until it ran.
        full = submit(server, files)
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "bulk_storage_full"
        assert int(full.headers["retry-after"]) > 0

        with jobs_worker(home, logs, redis_server, "jobs-2", **settings) as started:
            assert check(home, redis_server, "jobs-2") == 0
            job = finished(server, location)
            assert job["status"] == "done"
            assert job["progress"] == {"done": 4, "failed": 0, "total": 4}
            assert not client.exists(images_key)
            assert not client.exists(f"arq:job:{job_id}")  # arq's result, JSON too
            assert json.loads(client.get(f"arq:result:{job_id}"))["r"]["status"] == "done"
            for key in bulk_keys(redis_server):
                assert client.ttl(key) > 0, f"{key!r} has no TTL"
            assert submit(server, files).status_code == 202  # its bytes were released

            # bulk_result_ttl_s after it finished, the job is gone, key and all.
            wait_until(
                lambda: httpx.get(f"{server.url}{location}", timeout=10).status_code == 404,
                15,
                "the job to expire",
            )
            gone = httpx.get(f"{server.url}{location}", timeout=10).json()
            assert gone["error"]["code"] == "job_not_found"
            fresh = submit(server, files, key="nightly-batch")
            assert fresh.status_code == 202
            assert fresh.json()["job_id"] != job_id

            started.process.terminate()
            assert started.process.wait(timeout=30) == 0, started.log()
        assert check(home, redis_server, "jobs-2") == 1


def test_an_upload_no_jobs_worker_took_expires_and_frees_its_storage(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    settings = {
        "bulk_upload_ttl_s": "4",
        "max_bulk_bytes": "400000",
    }  # long enough to outlive the second submit on a loaded machine
    settings["max_bulk_stored_bytes"] = settings["max_bulk_bytes"]
    files = [(f"{i}.png", data) for i, data in enumerate(images(4, seed=17))]
    with cluster(home, logs, redis_server, **settings) as (server, _):
        first = submit(server, files)
        assert first.status_code == 202, first.text
        assert submit(server, files).json()["error"]["code"] == "bulk_storage_full"
        images_key = f"{NAMESPACE}:bulk:job:{first.json()['job_id']}:images"
        wait_until(lambda: not redis_server.client().exists(images_key), 20, "the upload TTL")
        job = httpx.get(f"{server.url}{first.headers['location']}", timeout=10).json()
        assert job["status"] == "failed"
        assert job["error"]["code"] == "upload_expired"
        # The ledger lets go of uploads that expired: the same upload fits again.
        assert submit(server, files).status_code == 202


def test_a_job_cut_off_by_sigterm_is_requeued_and_finished_by_another_jobs_worker(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    files = [(f"{i}.png", data) for i, data in enumerate(images(3, seed=16))]
    client = redis_server.client()
    with ExitStack() as stack:
        (inference,) = stack.enter_context(workers(home, logs, redis_server, "w1"))
        server = stack.enter_context(gateway(home, logs, redis_server, request_timeout_s="2"))
        response = submit(server, files)
        assert response.status_code == 202, response.text
        job_id, location = response.json()["job_id"], response.headers["location"]
        # No inference worker: the job starts, and its images wait and are retried.
        stop_process(inference.process)
        with jobs_worker(home, logs, redis_server, "jobs-a") as first:

            def running() -> bool:
                return (
                    httpx.get(f"{server.url}{location}", timeout=10).json()["status"] == "running"
                )

            wait_until(running, 30, "the job to start")
            first.process.terminate()  # arq waits 10 s for the job, then cancels it
            assert first.process.wait(timeout=30) == 0, first.log()
        cut_off = httpx.get(f"{server.url}{location}", timeout=10).json()
        assert cut_off["status"] == "running"
        assert cut_off["progress"]["done"] == 0
        assert client.zscore(f"{NAMESPACE}:bulk", job_id) is not None  # back in arq's queue
        assert not client.exists(f"arq:in-progress:{job_id}")  # and free to take

        stack.enter_context(workers(home, logs, redis_server, "w2"))
        with jobs_worker(home, logs, redis_server, "jobs-b"):
            job = finished(server, location)
        assert job["status"] == "done"
        assert [r["status"] for r in job["results"]] == ["done"] * 3


def test_standalone_mode_answers_that_bulk_jobs_need_redis(resnet_server: Server) -> None:
    post = submit(resnet_server, [("a.png", images(1)[0])])
    get = httpx.get(f"{resnet_server.url}/v1/jobs/{'0' * 32}", timeout=10)
    for response in (post, get):
        assert response.status_code == 501
        assert response.json()["error"]["code"] == "bulk_jobs_unavailable"


def test_schemathesis_finds_nothing_in_the_jobs_routes(
    bulk: Bulk, logs: Path, tmp_path: Path
) -> None:
    """The jobs routes are documented only where they work (distributed mode), so they
    are fuzzed here: no 500s, every answer as documented."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{bulk.server.url}/openapi.json",
        "--include-path-regex=^/v1/jobs",
        "--checks=all",
        "--exclude-checks=positive_data_acceptance",  # as in tests/e2e/test_openapi.py
        "--max-examples=25",
        "--seed=20261122",
        "--generation-database=none",
        "--workers=1",
        "--request-timeout=30",
        "--suppress-health-check=all",
        "--no-color",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    (logs / "schemathesis-jobs.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: 2" in run.stdout, run.stdout[-2000:]

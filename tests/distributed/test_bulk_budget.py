"""A jobs-worker decodes within its memory budget: a zip of images that could never fit
is answered per image (413 too_many_pixels), large ones take turns, memory stays bounded."""

from __future__ import annotations

import io
import random
import re
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from resnet_serve.api.limits.budget import CEILING_FRACTION
from tests.cluster import cluster, gateway, images, wait_until
from tests.deploy.contract import setting_default
from tests.deploy.tools import ROOT
from tests.distributed.test_bulk_jobs import finished, jobs_worker, submit_zip, zipped
from tests.hostile import megapixels_png, peak_rss_bytes, reset_peak, rss_bytes
from tests.redis_server import RedisServer, run_redis
from tests.servers import Server

pytestmark = pytest.mark.usefixtures("resnet_artifact")

MIB = 1024 * 1024
BUDGET = 128 * MIB


@pytest.fixture(scope="module")
def bulk_cluster(
    home: Path, logs: Path, resnet_artifact: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int]]:
    with ExitStack() as stack:
        redis: RedisServer = stack.enter_context(run_redis(tmp_path_factory.mktemp("redis")))
        server, _ = stack.enter_context(cluster(home, logs, redis))
        worker = stack.enter_context(
            jobs_worker(home, logs, redis, "jobs-budget", memory_budget_bytes=str(BUDGET))
        )
        yield server, worker.process.pid


def settled_rss(pid: int) -> int:
    """The process's RSS once two reads 0.2 s apart agree within 1 MB (start-up done)."""
    samples = [rss_bytes(pid)]

    def settled() -> bool:
        time.sleep(0.2)
        samples.append(rss_bytes(pid))
        return abs(samples[-1] - samples[-2]) < 2**20

    wait_until(settled, 30, "the jobs-worker's memory to settle")
    return samples[-1]


def test_a_zip_of_huge_pixel_images_stays_within_the_jobs_worker_budget(
    bulk_cluster: tuple[Server, int],
) -> None:
    server, pid = bulk_cluster
    huge = megapixels_png(40)  # ~900 MB to decode: can never fit
    large = megapixels_png(2)  # ~44 MB to decode: a few at a time
    photo = images(1, seed=7)[0]
    entries = [(f"huge{i}.png", huge) for i in range(6)]
    entries += [(f"large{i}.png", large) for i in range(6)]
    entries += [("photo.png", photo)]
    idle = settled_rss(pid)
    reset_peak(pid)
    response = submit_zip(server, zipped(*entries))
    assert response.status_code == 202, response.text
    job = finished(server, response.json()["location"], timeout_s=180)
    assert job["status"] == "done", job
    by_name = {item["filename"]: item for item in job["results"]}
    for i in range(6):
        assert by_name[f"huge{i}.png"]["error"]["code"] == "too_many_pixels"
        assert by_name[f"large{i}.png"].get("error") is None, by_name[f"large{i}.png"]
    assert by_name["photo.png"].get("error") is None
    grown = peak_rss_bytes(pid) - idle
    assert grown < BUDGET + 64 * MIB, f"the jobs-worker grew {grown / MIB:.0f} MiB"


def manifests_gateway_limit_bytes() -> int:
    """The gateway's memory limit, the same in k8s/base/gateway.yaml and compose."""
    units = {"Mi": MIB, "Gi": 1024 * MIB, "m": MIB, "g": 1024 * MIB}
    k8s = (ROOT / "k8s/base/gateway.yaml").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    (k8s_limit,) = re.findall(r"limits:\s+memory: (\d+)(Mi|Gi)", k8s)
    compose_limit = re.search(r"gateway:.*?mem_limit: (\d+)(m|g)", compose, re.S)
    assert compose_limit is not None
    sizes = {int(n) * units[u] for n, u in (k8s_limit, compose_limit.groups())}
    assert len(sizes) == 1, f"k8s and compose give gateways different limits: {sizes}"
    return sizes.pop()


def test_an_archive_of_max_bulk_bytes_fits_the_shipped_gateway_budget(
    home: Path, logs: Path, tmp_path: Path
) -> None:
    """A gateway with the budget its pod's limit gives it (limit x ceiling fraction minus
    its measured resident set) takes a zip of incompressible files as large as
    `max_bulk_bytes` allows: the archive and its files are held once each, not the
    archive twice plus a full `max_bulk_bytes` on top."""
    max_bulk = setting_default("max_bulk_bytes")
    assert isinstance(max_bulk, int)
    rng = random.Random(3)
    files = [(f"blob{i}.bin", rng.randbytes(max_bulk // 4 - 4096)) for i in range(4)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    body = buffer.getvalue()
    assert max_bulk - 64 * 1024 < sum(len(d) for _, d in files) <= max_bulk
    with run_redis(tmp_path / "redis") as redis:
        with gateway(home, logs, redis) as plain:
            baseline = settled_rss(plain.process.pid)
        total = int(manifests_gateway_limit_bytes() * CEILING_FRACTION) - baseline
        with gateway(home, logs, redis, memory_budget_bytes=str(total)) as shipped:
            response = submit_zip(shipped, body)
    assert response.status_code == 202, (total // MIB, response.text)

"""Every dashboard panel, alert and autoscaling query returns data from a real Prometheus
scraping the real distributed service: no panel can name a metric the code does not
export, or a label value it never sets."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.cluster import classify, cluster, images, wait_until
from tests.deploy.queries import ALERTS, all_queries
from tests.images import jpeg
from tests.redis_server import RedisServer
from tests.servers import Server, free_port

pytestmark = pytest.mark.usefixtures("resnet_artifact")


@contextmanager
def prometheus(work: Path, gateways: list[str], workers: list[str]) -> Iterator[str]:
    """A real Prometheus on loopback scraping every second, with the alerting rules."""
    executable = shutil.which("prometheus")
    assert executable, "prometheus is not installed (.ci/run installs it)"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "resnet-serve-gateway", "static_configs": [{"targets": gateways}]},
            {"job_name": "resnet-serve-worker", "static_configs": [{"targets": workers}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        executable,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    with (work / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _get(f"{url}/-/ready") == 200, 30, "prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


def _host(url: str) -> str:
    return urlsplit(url).netloc


def send_traffic(server: Server, duration_s: float) -> None:
    """Successes, cache hits, caller errors and overload, for `duration_s`."""
    photo, burst = jpeg("coffee"), images(12, seed=11)
    stop = time.monotonic() + duration_s
    with ThreadPoolExecutor(12) as pool:
        while time.monotonic() < stop:
            list(pool.map(lambda data: classify(server, data), burst))  # some 503 queue_full
            classify(server, photo)  # a cache hit after the first time
            httpx.post(f"{server.url}/v1/classify", content=b"not an image at all")


def test_every_panel_alert_and_keda_query_returns_data(
    home: Path, logs: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(home, logs, redis_server, ("w1", "w2"), max_queue="4") as (server, workers):
        targets = [_host(w.metrics_url) for w in workers]
        with prometheus(tmp_path, [_host(server.url)], targets) as prom:
            send_traffic(server, duration_s=8)
            time.sleep(3)  # a few more scrapes and rule evaluations after the traffic
            empty = []
            for query in all_queries():
                response = httpx.get(f"{prom}/api/v1/query", params={"query": query.probe()})
                body = response.json()
                assert body["status"] == "success", (query.name, body)
                if not body["data"]["result"]:
                    empty.append(f"{query.source} {query.name}: {query.probe()}")
    assert not empty, "queries that returned no data:\n" + "\n".join(empty)

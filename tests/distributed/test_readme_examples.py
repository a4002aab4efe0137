"""README's curl examples, run as written against a distributed cluster (redis-server,
`api`, one `worker`): each answers 2xx, bulk jobs included. Also what a gateway's
/metrics shows in distributed mode."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.cluster import cluster
from tests.readme import assert_all_succeed, curl_examples, run_examples
from tests.redis_server import RedisServer


def test_readme_curl_examples_succeed_distributed(
    home: Path, logs: Path, redis_server: RedisServer, resnet_artifact: None, tmp_path: Path
) -> None:
    examples = curl_examples()
    assert any(e.section == "Bulk jobs" for e in examples)
    with cluster(home, logs, redis_server) as (server, _):
        assert_all_succeed(run_examples(examples, server.url, tmp_path))
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert "_created" not in text
    # Two bulk jobs queued by the examples, no jobs-worker running: both still waiting.
    assert "resnet_serve_bulk_queue_depth 2.0" in text
    assert 'resnet_serve_workers{model="resnet18"} 1.0' in text

"""KServe v2 through a gateway and a worker joined by Redis: the FP32 vector and the
classification strings cross the wire and agree with /v1 on the same cluster."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.cluster import MODEL, cluster
from tests.images import jpeg
from tests.redis_server import RedisServer

pytestmark = pytest.mark.usefixtures("resnet_artifact")


def test_v2_outputs_cross_redis(home: Path, logs: Path, redis_server: RedisServer) -> None:
    files = [jpeg("chelsea"), jpeg("coffee")]
    with cluster(home, logs, redis_server) as (server, _):
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        images = triton.InferInput("images", [2], "BYTES")
        images.set_data_from_numpy(np.array(files, dtype=np.object_))
        vector = client.infer(MODEL, [images]).as_numpy("probabilities")
        top3 = [triton.InferRequestedOutput("probabilities", class_count=3)]
        classes = client.infer(MODEL, [images], outputs=top3).as_numpy("probabilities")
        client.close()
        v1 = [
            httpx.post(
                f"{server.url}/v1/classify",
                content=data,
                headers={"content-type": "image/jpeg"},
                timeout=30,
            ).json()["predictions"]
            for data in files
        ]
    assert vector.shape == (2, 1000)
    for row, strings, want in zip(vector, classes, v1, strict=True):
        best = [int(i) for i in np.argsort(row)[::-1][:3]]
        assert best == [p["index"] for p in want]
        assert [int(s.decode().split(":")[1]) for s in strings] == best
        np.testing.assert_allclose(row[best], [p["score"] for p in want], atol=1e-5)

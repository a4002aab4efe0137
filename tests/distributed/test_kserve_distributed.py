"""KServe v2 through a gateway and a worker joined by Redis: the FP32 vector and the
classification strings cross the wire and agree with /v1 on the same cluster."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton

from resnet_serve.api.grpc.protocol import pb, rpc
from resnet_serve.api.kserve.codec import pack_bytes
from tests.cluster import MODEL, cluster, gateway
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


def test_grpc_through_redis_equals_rest(home: Path, logs: Path, redis_server: RedisServer) -> None:
    """gRPC on a distributed gateway: the same answers as REST, streaming included, and
    a model no worker serves is UNAVAILABLE (no_workers) with retry information."""
    files = [jpeg("chelsea"), jpeg("coffee")]
    with cluster(home, logs, redis_server) as (server, _):
        rest = triton.InferenceServerClient(server.url.removeprefix("http://"))
        client = triton_grpc.InferenceServerClient(server.grpc_target)
        try:
            rest_images = triton.InferInput("images", [2], "BYTES")
            rest_images.set_data_from_numpy(np.array(files, dtype=np.object_))
            want = rest.infer(MODEL, [rest_images]).as_numpy("probabilities")
            images = triton_grpc.InferInput("images", [2], "BYTES")
            images.set_data_from_numpy(np.array(files, dtype=np.object_))
            got = client.infer(MODEL, [images]).as_numpy("probabilities")
            answers: queue.Queue[tuple[object, object]] = queue.Queue()
            client.start_stream(callback=lambda result, error: answers.put((result, error)))
            client.async_stream_infer(MODEL, [images], request_id="s1")
            streamed, error = answers.get(timeout=30)
            client.stop_stream()
            assert error is None
            assert client.is_model_ready(MODEL)
            assert not client.is_model_ready("efficientnet_lite0")
        finally:
            rest.close()
            client.close()
    np.testing.assert_allclose(got, want, atol=1e-5)  # batched with other images, or not
    np.testing.assert_allclose(streamed.as_numpy("probabilities"), want, atol=1e-5)  # type: ignore[attr-defined]


def test_grpc_without_workers_is_unavailable(
    home: Path, logs: Path, redis_server: RedisServer
) -> None:
    with gateway(home, logs, redis_server) as server:
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="images", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(pack_bytes([jpeg("rocket")]))
        with grpc.insecure_channel(server.grpc_target) as channel:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                rpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
            assert time.monotonic() - started < 5
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers["error-code"] == "no_workers"
    assert int(trailers["grpc-retry-pushback-ms"]) >= 1

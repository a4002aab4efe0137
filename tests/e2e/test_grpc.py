"""The Open Inference Protocol over gRPC, with NVIDIA's own `tritonclient.grpc` (sync and
asyncio) against a real standalone server serving EfficientNet-Lite0's real weights: its
answers must equal REST's for the same photos."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from resnet_serve.api.grpc.protocol import pb, rpc
from resnet_serve.api.grpc.server import SERVED
from resnet_serve.shared.preprocess import PreprocessConfig, preprocess
from tests.deploy.tools import ROOT
from tests.images import jpeg
from tests.servers import Server

MODEL = "efficientnet_lite0"
PHOTOS = ("chelsea", "coffee", "rocket")
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def client(lite_server: Server) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(lite_server.grpc_target)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def rest(lite_server: Server) -> Iterator[triton_http.InferenceServerClient]:
    connection = triton_http.InferenceServerClient(lite_server.url.removeprefix("http://"))
    yield connection
    connection.close()


def images(files: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    return tensor


def pixels(crops: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("pixels", list(crops.shape), "UINT8")
    tensor.set_data_from_numpy(crops)
    return tensor


def top(k: int) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput("probabilities", class_count=k)]


def rest_probabilities(rest: triton_http.InferenceServerClient, data: bytes) -> np.ndarray:
    tensor = triton_http.InferInput("images", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=True)
    return rest.infer(MODEL, [tensor]).as_numpy("probabilities")[0]


def grpc_error(call: object, *args: object, **kwargs: object) -> InferenceServerException:
    assert callable(call)
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_health_metadata_and_config(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready("resnet152")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "resnet-serve"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    model = client.get_model_metadata(MODEL, "1", as_json=True)
    assert model["versions"] == ["1"]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in model["inputs"]} == {
        ("images", "BYTES", ("-1",)),  # int64 as proto3 JSON writes it
        ("pixels", "UINT8", ("-1", "224", "224", "3")),
    }
    config = client.get_model_config(MODEL, as_json=True)["config"]
    assert config["name"] == MODEL
    assert config["platform"] == model["platform"]
    assert [(t["name"], t["data_type"]) for t in config["input"]] == [
        ("images", "TYPE_STRING"),
        ("pixels", "TYPE_UINT8"),
    ]
    assert config["output"][0]["dims"] == ["1000"]
    assert grpc_error(client.get_model_metadata, "resnet152").status() == "StatusCode.NOT_FOUND"
    assert grpc_error(client.get_model_config, MODEL, "2").status() == "StatusCode.NOT_FOUND"


def test_jpeg_bytes_answers_equal_rest(
    client: triton.InferenceServerClient, rest: triton_http.InferenceServerClient
) -> None:
    """One image per request on both sides, so both run it in a batch of one."""
    for name in PHOTOS:
        data = jpeg(name)
        got = client.infer(MODEL, [images([data])]).as_numpy("probabilities")[0]
        want = rest_probabilities(rest, data)
        assert got.shape == (1000,)
        assert list(np.argsort(got)[::-1][:5]) == list(np.argsort(want)[::-1][:5])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_classification_extension_and_request_id(client: triton.InferenceServerClient) -> None:
    files = [jpeg(name) for name in PHOTOS]
    result = client.infer(MODEL, [images(files)], outputs=top(3), request_id="r-7")
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("r-7", MODEL, "1")
    classes = result.as_numpy("probabilities")
    assert classes.shape == (3, 3)
    score, index, label = classes[0][0].decode().split(":", 2)
    assert label in {"tabby", "tiger cat", "Egyptian cat"}
    assert 0 < float(score) <= 1
    assert 0 <= int(index) < 1000


def test_uint8_pixels_equal_jpeg_bytes(client: triton.InferenceServerClient) -> None:
    files = [jpeg(name) for name in PHOTOS[:2]]
    # The model's recipe (Resize 256, CenterCrop 224): the pixels the server makes.
    crops = np.stack([preprocess(data, PreprocessConfig(256, 224)) for data in files])
    from_pixels = client.infer(MODEL, [pixels(crops)], outputs=top(3)).as_numpy("probabilities")
    from_files = client.infer(MODEL, [images(files)], outputs=top(3)).as_numpy("probabilities")
    assert [[e.split(b":")[1] for e in row] for row in from_pixels] == [
        [e.split(b":")[1] for e in row] for row in from_files
    ]


def test_typed_contents_instead_of_raw(lite_server: Server) -> None:
    """Clients other than tritonclient may send `contents` rather than raw bytes."""
    data = jpeg("coffee")
    crop = preprocess(data, PreprocessConfig(256, 224))
    with grpc.insecure_channel(lite_server.grpc_target) as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)
        files = pb.ModelInferRequest(model_name=MODEL)
        files.inputs.add(name="images", datatype="BYTES", shape=[1]).contents.bytes_contents[:] = [
            data
        ]
        array = pb.ModelInferRequest(model_name=MODEL)
        tensor = array.inputs.add(name="pixels", datatype="UINT8", shape=[1, 224, 224, 3])
        tensor.contents.uint_contents[:] = crop.ravel().tolist()
        answers = [stub.ModelInfer(request, timeout=30) for request in (files, array)]
        scores = [np.frombuffer(a.raw_output_contents[0], "<f4") for a in answers]
        assert scores[0].shape == (1000,)
        assert int(np.argmax(scores[0])) == int(np.argmax(scores[1]))

        bad = pb.ModelInferRequest(model_name=MODEL)
        tensor = bad.inputs.add(name="pixels", datatype="UINT8", shape=[1, 224, 224, 3])
        tensor.contents.uint_contents[:] = [300] * (224 * 224 * 3)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(bad, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "0..255" in caught.value.details()


def test_streaming_infer_answers_each_request(client: triton.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, name in enumerate(PHOTOS):
            client.async_stream_infer(
                MODEL, [images([jpeg(name)])], outputs=top(1), request_id=str(i)
            )
        client.async_stream_infer(MODEL, [images([b"not an image"])], request_id="bad")
        got = [answers.get(timeout=30) for _ in range(len(PHOTOS) + 1)]
    finally:
        client.stop_stream()
    results = {r.get_response().id: r for r, error in got if error is None}  # type: ignore[attr-defined]
    errors = [error for _, error in got if error is not None]
    assert sorted(results) == ["0", "1", "2"]
    assert len(errors) == 1
    assert "not an image" in str(errors[0])
    unary = client.infer(MODEL, [images([jpeg("chelsea")])], outputs=top(1))
    assert (
        results["0"].as_numpy("probabilities")[0][0].split(b":")[1:]
        == (  # type: ignore[attr-defined]
            unary.as_numpy("probabilities")[0][0].split(b":")[1:]
        )
    )


def test_asyncio_client(lite_server: Server) -> None:
    async def run() -> tuple[bool, list[np.ndarray]]:
        async with triton_aio.InferenceServerClient(lite_server.grpc_target) as client:
            ready = await client.is_model_ready(MODEL)
            calls = [client.infer(MODEL, [images([jpeg(name)])], outputs=top(1)) for name in PHOTOS]
            return ready, [r.as_numpy("probabilities") for r in await asyncio.gather(*calls)]

    ready, results = asyncio.run(run())
    assert ready
    assert [r.shape for r in results] == [(1, 1)] * len(PHOTOS)


def test_statistics_count_requests_at_grpc_and_rest(
    client: triton.InferenceServerClient, lite_server: Server
) -> None:
    def stats() -> dict[str, object]:
        return client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]

    before = stats()
    client.infer(MODEL, [images([jpeg("rocket"), jpeg("coffee")])], outputs=top(1))
    grpc_error(client.infer, MODEL, [images([b"garbage"])])
    after = stats()
    count = lambda s, kind: int(s["inference_stats"][kind].get("count", 0))  # noqa: E731
    assert count(after, "success") == count(before, "success") + 1
    assert count(after, "fail") == count(before, "fail") + 1
    assert int(after["inference_count"]) == int(before.get("inference_count", 0)) + 2
    assert int(after["inference_stats"]["compute_infer"]["ns"]) > int(
        before["inference_stats"]["compute_infer"].get("ns", 0)
    )
    rest = httpx.get(f"{lite_server.url}/v2/models/{MODEL}/stats", timeout=10).json()
    assert rest["model_stats"][0]["inference_stats"]["success"]["count"] == count(after, "success")
    everything = httpx.get(f"{lite_server.url}/v2/models/stats", timeout=10).json()
    assert [m["name"] for m in everything["model_stats"]] == [MODEL]
    assert httpx.get(f"{lite_server.url}/v2/models/nope/stats", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (lambda: [images([b"\x00garbage"])], None, "not an image"),
        (lambda: [pixels(np.zeros((1, 100, 100, 3), np.uint8))], None, "shape [N, 224, 224, 3]"),
        (
            lambda: [images([jpeg("coffee")]), pixels(np.zeros((1, 224, 224, 3), np.uint8))],
            None,
            "exactly one input",
        ),
        (
            lambda: [images([jpeg("coffee")])],
            [triton.InferRequestedOutput("logits")],
            "unknown output",
        ),
        (lambda: [images([jpeg("coffee")])], top(1001), "the model has 1000"),
    ],
    ids=["not-an-image", "shape", "two-inputs", "output-name", "too-many-classes"],
)
def test_bad_input_is_invalid_argument(
    client: triton.InferenceServerClient,
    inputs: partial[list[triton.InferInput]],
    outputs: object,
    message: str,
) -> None:
    error = grpc_error(client.infer, MODEL, inputs(), outputs=outputs)
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.message()


def test_float_pixels_are_refused(client: triton.InferenceServerClient) -> None:
    floats = triton.InferInput("pixels", [1, 224, 224, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.float32))
    error = grpc_error(client.infer, MODEL, [floats])
    assert (error.status(), "must be UINT8" in error.message()) == (
        "StatusCode.INVALID_ARGUMENT",
        True,
    )


def test_unknown_model_and_deadlines(
    client: triton.InferenceServerClient, lite_server: Server
) -> None:
    counted = lite_server.metric("resnet_serve_errors_total", code="unknown_model")
    unknown = grpc_error(client.infer, "resnet152", [images([jpeg("coffee")])])
    assert unknown.status() == "StatusCode.NOT_FOUND"
    assert lite_server.metric("resnet_serve_errors_total", code="unknown_model") == counted + 1
    # Triton's `timeout` parameter (microseconds): past it, DEADLINE_EXCEEDED.
    late = grpc_error(client.infer, MODEL, [images([jpeg("rocket")])], timeout=1)
    assert late.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_metrics_count_grpc_calls_by_rpc(
    client: triton.InferenceServerClient, lite_server: Server
) -> None:
    ok = lite_server.metric("resnet_serve_requests_total", route=INFER, status="OK")
    bad = lite_server.metric("resnet_serve_requests_total", route=INFER, status="INVALID_ARGUMENT")
    client.infer(MODEL, [images([jpeg("coffee")])])
    grpc_error(client.infer, MODEL, [images([b"garbage"])])
    assert lite_server.metric("resnet_serve_requests_total", route=INFER, status="OK") == ok + 1
    assert (
        lite_server.metric("resnet_serve_requests_total", route=INFER, status="INVALID_ARGUMENT")
        == bad + 1
    )
    assert lite_server.metric("resnet_serve_request_duration_seconds_count", route=INFER) >= ok + 2


def test_health_service_and_reflection(lite_server: Server) -> None:
    with grpc.insecure_channel(lite_server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        asked = reflection_pb2.ServerReflectionRequest(list_services="")
        listed = next(reflection.ServerReflectionInfo(iter([asked]), timeout=10))
        names = {s.name for s in listed.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
        # Every RPC the golden record lists is served; the rest answer UNIMPLEMENTED.
        assert len(SERVED) == 9
        index = channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex")
        with pytest.raises(grpc.RpcError) as caught:
            index(b"", timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_repeated_photos_are_answered_from_the_response_cache(
    client: triton.InferenceServerClient, lite_server: Server
) -> None:
    data = jpeg("chelsea", quality=71)  # bytes no other test sends
    hits = lite_server.metric("resnet_serve_cache_lookups_total", result="hit")
    inferred = lite_server.metric("resnet_serve_batch_size_sum")
    first = client.infer(MODEL, [images([data])]).as_numpy("probabilities")
    again = client.infer(MODEL, [images([data])]).as_numpy("probabilities")
    np.testing.assert_array_equal(first, again)
    assert lite_server.metric("resnet_serve_cache_lookups_total", result="hit") == hits + 1
    assert lite_server.metric("resnet_serve_batch_size_sum") == inferred + 1
    # Another output shape is another entry: top-k strings are not read from the vector.
    client.infer(MODEL, [images([data])], outputs=top(2))
    assert lite_server.metric("resnet_serve_batch_size_sum") == inferred + 2


def test_the_documented_example_runs(lite_server: Server, tmp_path: Path) -> None:
    """docs/api.md's gRPC example, as written, but for the address, model and photo."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## KServe v2 over gRPC", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(jpeg("chelsea"))
    code = (
        code.replace("127.0.0.1:8001", lite_server.grpc_target)
        .replace('"resnet18"', f'"{MODEL}"')
        .replace('"cat.jpg"', f'"{photo}"')
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "cat" in done.stdout

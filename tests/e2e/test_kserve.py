"""KServe v2 over real HTTP, with NVIDIA's own `tritonclient` as the client: its answers
must equal /v1/classify's for the same images."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from resnet_serve.shared.preprocess import PreprocessConfig, preprocess
from tests.images import crops, encode, jpeg
from tests.servers import Server, run_server

MODEL = "efficientnet_lite0"
PHOTOS = ("chelsea", "coffee", "rocket")


@pytest.fixture
def client(lite_server: Server) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(
        lite_server.url.removeprefix("http://"), network_timeout=60
    )
    yield connection
    connection.close()


def v1_top(server: Server, data: bytes, k: int) -> list[tuple[int, str, float]]:
    response = httpx.post(
        f"{server.url}/v1/classify",
        params={"top_k": k},
        content=data,
        headers={"content-type": "image/jpeg"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [(p["index"], p["label"], p["score"]) for p in response.json()["predictions"]]


def images_input(files: list[bytes], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    # JSON carries text only: encoded files travel as base64 strings there.
    elements = files if binary else [base64.b64encode(f).decode() for f in files]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def pixels_input(crops: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("pixels", list(crops.shape), "UINT8")
    tensor.set_data_from_numpy(crops, binary_data=binary)
    return tensor


def parse_classes(row: np.ndarray) -> list[tuple[int, str, float]]:
    parsed = []
    for element in row:
        text = element.decode() if isinstance(element, bytes) else element
        score, index, label = text.split(":", 2)
        parsed.append((int(index), label, float(score)))
    return parsed


def assert_same_top(got: list[tuple[int, str, float]], want: list[tuple[int, str, float]]) -> None:
    assert [(i, label) for i, label, _ in got] == [(i, label) for i, label, _ in want]
    # Several images of one request share a batch; /v1 ran each alone.
    assert [s for *_, s in got] == pytest.approx([s for *_, s in want], abs=1e-5)


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready("resnet152")
    server = client.get_server_metadata()
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    model = client.get_model_metadata(MODEL, "1")
    assert model["versions"] == ["1"]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in model["inputs"]} == {
        ("images", "BYTES", (-1,)),
        ("pixels", "UINT8", (-1, 224, 224, 3)),
    }
    assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]}]


def test_model_config_in_tritons_shape(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL)
    assert config == client.get_model_config(MODEL, "1")
    assert config["name"] == MODEL
    assert config["platform"] == client.get_model_metadata(MODEL)["platform"]
    assert config["max_batch_size"] >= 1
    assert {(t["name"], t["data_type"], tuple(t["dims"])) for t in config["input"]} == {
        ("images", "TYPE_STRING", (1,)),
        ("pixels", "TYPE_UINT8", (224, 224, 3)),
    }
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("probabilities", "TYPE_FP32", [1000])
    ]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] >= 0
    assert triton_error(client.get_model_config, "resnet152").status() == "404"
    assert triton_error(client.get_model_config, MODEL, "2").status() == "404"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_classification_extension_equals_v1(
    client: triton.InferenceServerClient, lite_server: Server, binary: bool
) -> None:
    files = [jpeg(name) for name in PHOTOS]
    wanted = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = client.infer(MODEL, [images_input(files, binary)], outputs=[wanted], request_id="r1")
    response = result.get_response()
    assert response["id"] == "r1"
    assert response["model_version"] == "1"
    output = response["outputs"][0]
    assert output["datatype"] == "BYTES"
    assert ("parameters" in output) is binary  # binary_data_size instead of data
    classes = result.as_numpy("probabilities")
    assert classes.shape == (3, 3)
    for data, row in zip(files, classes, strict=True):
        assert_same_top(parse_classes(row), v1_top(lite_server, data, 3))
    assert parse_classes(classes[0])[0][1] in {"tabby", "tiger cat", "Egyptian cat"}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_probabilities_output_equals_v1(
    client: triton.InferenceServerClient, lite_server: Server, binary: bool
) -> None:
    files = [jpeg(name) for name in PHOTOS]
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer(MODEL, [images_input(files, binary)], outputs=outputs)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 1000)
    assert probabilities.dtype == np.float32
    assert probabilities.sum(axis=1) == pytest.approx([1, 1, 1], abs=1e-3)
    for data, row in zip(files, probabilities, strict=True):
        best = np.argsort(row)[::-1][:5]
        want = v1_top(lite_server, data, 5)
        assert [int(i) for i in best] == [i for i, *_ in want]
        assert [float(row[i]) for i in best] == pytest.approx([s for *_, s in want], abs=1e-5)


def test_no_outputs_named_answers_every_output_in_binary(
    client: triton.InferenceServerClient,
) -> None:
    # tritonclient then asks for binary_data_output, and must read the FP32 tensor back.
    result = client.infer(MODEL, [images_input([jpeg("coffee")], binary=True)])
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 4000
    assert result.as_numpy("probabilities").shape == (1, 1000)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_preprocessed_uint8_pixels_equal_v1(
    client: triton.InferenceServerClient, lite_server: Server, binary: bool
) -> None:
    files = [jpeg(name) for name in PHOTOS[:2]]
    # The model's recipe (Resize 256, CenterCrop 224): the same pixels the server makes.
    crops = np.stack([preprocess(data, PreprocessConfig(256, 224)) for data in files])
    wanted = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = client.infer(MODEL, [pixels_input(crops, binary)], outputs=[wanted])
    for data, row in zip(files, result.as_numpy("probabilities"), strict=True):
        assert_same_top(parse_classes(row), v1_top(lite_server, data, 3))


def test_compressed_request_and_explicit_version(client: triton.InferenceServerClient) -> None:
    wanted = triton.InferRequestedOutput("probabilities", class_count=1)
    inputs = [images_input([jpeg("chelsea")], binary=True)]
    plain = client.infer(MODEL, inputs, outputs=[wanted]).as_numpy("probabilities")
    for algorithm in ("gzip", "deflate"):
        packed = client.infer(
            MODEL,
            inputs,
            model_version="1",
            outputs=[wanted],
            request_compression_algorithm=algorithm,
        )
        assert packed.as_numpy("probabilities")[0][0] == plain[0][0]


def triton_error(call: object, *args: object, **kwargs: object) -> InferenceServerException:
    assert callable(call)
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_errors_are_4xx_with_a_message(
    client: triton.InferenceServerClient, lite_server: Server
) -> None:
    cat = [images_input([jpeg("chelsea")], binary=True)]
    counted = lite_server.metric("resnet_serve_errors_total", code="unknown_model")
    unknown = triton_error(client.infer, "resnet152", cat)
    assert unknown.status() == "404"
    assert "resnet152" in unknown.message()
    # The protocol's body has no code, but the stable code is still counted.
    assert lite_server.metric("resnet_serve_errors_total", code="unknown_model") == counted + 1
    assert triton_error(client.infer, MODEL, cat, model_version="7").status() == "404"
    assert triton_error(client.get_model_metadata, "resnet152").status() == "404"

    garbage = triton_error(client.infer, MODEL, [images_input([b"\x00garbage"], binary=True)])
    assert garbage.status() == "400"
    assert "element 0" in garbage.message()
    assert "not an image" in garbage.message()

    small = np.zeros((1, 100, 100, 3), np.uint8)
    shape = triton_error(client.infer, MODEL, [pixels_input(small, binary=True)])
    assert (shape.status(), "shape [N, 224, 224, 3]" in shape.message()) == ("400", True)

    floats = triton.InferInput("pixels", [1, 224, 224, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.float32))
    dtype = triton_error(client.infer, MODEL, [floats])
    assert (dtype.status(), "must be UINT8" in dtype.message()) == ("400", True)

    wanted = [triton.InferRequestedOutput("logits")]
    assert triton_error(client.infer, MODEL, cat, outputs=wanted).status() == "400"
    too_many = [triton.InferRequestedOutput("probabilities", class_count=1001)]
    assert triton_error(client.infer, MODEL, cat, outputs=too_many).status() == "400"


def test_timeout_parameter_shortens_the_deadline(client: triton.InferenceServerClient) -> None:
    late = triton_error(client.infer, MODEL, [images_input([jpeg("rocket")], True)], timeout=1)
    assert late.status() == "504"


def post(server: Server, body: bytes | dict[str, object], **headers: str) -> httpx.Response:
    url = f"{server.url}/v2/models/{MODEL}/infer"
    if isinstance(body, dict):
        return httpx.post(url, json=body, headers=headers, timeout=30)
    return httpx.post(url, content=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"{not json", {}, "invalid inference request"),
        ({"inputs": []}, {}, "inputs"),
        (
            {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]},
            {},
            "not valid base64",
        ),
        (
            {"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]},
            {},
            "has shape [2] but 1 elements",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 224, 224, 3], "datatype": "UINT8"}]},
            {},
            "neither data nor binary_data_size",
        ),
        (
            {"inputs": [{"name": "pixels", "shape": [1, 1], "datatype": "UINT8", "data": [300]}]},
            {},
            "must have shape",
        ),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "has only 14 bytes"),
        (b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, "could not be decompressed"),
    ],
    ids=[
        "bad-json",
        "no-inputs",
        "bad-base64",
        "shape-vs-data",
        "no-data",
        "pixels-shape",
        "header-length",
        "bad-gzip",
    ],
)
def test_malformed_requests_get_400_and_the_protocol_error_body(
    lite_server: Server, body: bytes | dict[str, object], headers: dict[str, str], message: str
) -> None:
    response = post(lite_server, body, **headers)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert message in response.json()["error"]


def test_binary_data_that_no_input_claims_is_refused(lite_server: Server) -> None:
    header = b'{"inputs":[{"name":"images","shape":[1],"datatype":"BYTES","data":["aGk="]}]}'
    response = post(
        lite_server, header + b"extra", **{"Inference-Header-Content-Length": str(len(header))}
    )
    assert response.status_code == 400
    assert "belong to no input" in response.json()["error"]


def test_unknown_paths_and_methods_under_v2(lite_server: Server) -> None:
    missing = httpx.get(f"{lite_server.url}/v2/repository/index")
    assert (missing.status_code, list(missing.json())) == (404, ["error"])
    wrong = httpx.get(f"{lite_server.url}/v2/models/{MODEL}/infer")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")


def test_overload_is_503_with_retry_after(home: Path, logs: Path) -> None:
    images = [encode(view, "PNG") for view in crops(12, seed=13)]
    with run_server(home, logs, "--weights", "random", "--max-batch", "1", max_queue="1") as server:
        url = f"{server.url}/v2/models/resnet18/infer"

        def infer(data: bytes) -> httpx.Response:
            tensor = {"name": "images", "shape": [1], "datatype": "BYTES"}
            body = {"inputs": [tensor | {"data": [base64.b64encode(data).decode()]}]}
            return httpx.post(url, json=body, timeout=30)

        with ThreadPoolExecutor(len(images)) as pool:
            responses = list(pool.map(infer, images))
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}
    assert statuses == {200, 503}, statuses
    for busy in (r for r in responses if r.status_code == 503):
        assert list(busy.json()) == ["error"]
        assert int(busy.headers["retry-after"]) >= 1

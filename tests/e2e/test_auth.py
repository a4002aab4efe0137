"""Optional API-key auth on the gateway, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.images import jpeg
from tests.servers import Server, run_server

KEY_FROM_SETTING, KEY_FROM_FILE = "k-setting-3f9a", "k-file-77c1"


@pytest.fixture(scope="module")
def guarded(home: Path, logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys"
    keys_file.write_text(f"# rotated monthly\n{KEY_FROM_FILE}  # ops team\n\n")
    with run_server(
        home,
        logs,
        "--weights",
        "random",
        api_keys=f"{KEY_FROM_SETTING}, other-key",
        api_keys_file=str(keys_file),
    ) as server:
        yield server


def classify(server: Server, headers: dict[str, str]) -> httpx.Response:
    headers = {"content-type": "image/jpeg", **headers}
    return httpx.post(f"{server.url}/v1/classify", content=jpeg("coffee"), headers=headers)


@pytest.mark.parametrize("key", [KEY_FROM_SETTING, KEY_FROM_FILE])
def test_a_configured_key_is_accepted(guarded: Server, key: str) -> None:
    assert classify(guarded, {"authorization": f"Bearer {key}"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-key"},
        {"authorization": f"Bearer {KEY_FROM_SETTING}x"},
        {"authorization": f"Basic {KEY_FROM_SETTING}"},
        {"authorization": KEY_FROM_SETTING},
        {"authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "prefix-of-nothing", "wrong-scheme", "no-scheme", "empty"],
)
def test_every_bad_credential_gets_the_same_401(guarded: Server, headers: dict[str, str]) -> None:
    response = classify(guarded, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    # One message for every failure: nothing says which part was wrong.
    assert error["message"] == classify(guarded, {}).json()["error"]["message"]
    assert error["request_id"] == response.headers["x-request-id"]


def test_probes_and_metrics_need_no_key(guarded: Server) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{guarded.url}{path}").status_code == 200
    assert httpx.get(f"{guarded.url}/v1/models").status_code == 401
    assert guarded.metric("resnet_serve_errors_total", code="unauthorized") >= 1


def test_keys_never_reach_the_log(guarded: Server) -> None:
    classify(guarded, {"authorization": f"Bearer {KEY_FROM_SETTING}"})
    log = guarded.log()
    assert KEY_FROM_SETTING not in log
    assert KEY_FROM_FILE not in log


def test_kserve_routes_get_the_protocols_error_shape(guarded: Server) -> None:
    response = httpx.get(f"{guarded.url}/v2/models/resnet18")
    assert response.status_code == 401
    assert response.json() == {"error": response.json()["error"]}
    assert isinstance(response.json()["error"], str)
    assert httpx.get(f"{guarded.url}/v2/health/ready").status_code == 200  # exempt


@pytest.mark.parametrize(
    "metadata",
    [
        {"authorization": f"Bearer {KEY_FROM_SETTING}"},
        {"authorization": f"bearer {KEY_FROM_FILE}"},
        {"x-api-key": KEY_FROM_FILE},
    ],
    ids=["bearer", "bearer-lower-case", "x-api-key"],
)
def test_grpc_accepts_a_key_in_metadata(guarded: Server, metadata: dict[str, str]) -> None:
    client = triton_grpc.InferenceServerClient(guarded.grpc_target)
    tensor = triton_grpc.InferInput("images", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([jpeg("coffee")], dtype=np.object_))
    try:
        result = client.infer("resnet18", [tensor], headers=metadata)
        assert result.as_numpy("probabilities").shape == (1, 1000)
        assert client.get_model_metadata("resnet18", headers=metadata).name == "resnet18"
    finally:
        client.close()


@pytest.mark.parametrize(
    "metadata",
    [{}, {"authorization": "Bearer wrong-key"}, {"x-api-key": f"{KEY_FROM_SETTING}x"}],
    ids=["missing", "wrong", "x-api-key-wrong"],
)
def test_grpc_without_a_valid_key_is_unauthenticated(
    guarded: Server, metadata: dict[str, str]
) -> None:
    client = triton_grpc.InferenceServerClient(guarded.grpc_target)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("resnet18", headers=metadata)
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        # Liveness and readiness stay open (their REST twins are exempt), as the
        # standard health service does for Kubernetes' gRPC probes.
        assert client.is_server_live(headers=metadata)
        assert client.is_server_ready(headers=metadata)
    finally:
        client.close()
    with grpc.insecure_channel(guarded.grpc_target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert check.status == health_pb2.HealthCheckResponse.SERVING

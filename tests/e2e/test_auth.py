"""Optional API-key auth on the gateway, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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

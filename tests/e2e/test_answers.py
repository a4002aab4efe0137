"""What an answer tells a new user: multipart fields honoured, a plain sentence for a
missing content type, cached answers that read right, random weights said out loud,
and a /metrics page without noise."""

from __future__ import annotations

import httpx

from tests.images import jpeg
from tests.servers import Server


def post_form(server: Server, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify",
        files={"file": ("cat.jpg", jpeg("chelsea"), "image/jpeg")},
        data=fields,
        timeout=30,
    )


def test_multipart_model_and_top_k_fields_are_honoured(resnet_server: Server) -> None:
    unknown = post_form(resnet_server, model="no_such_model")
    assert unknown.status_code == 404
    assert "served: resnet18" in unknown.json()["error"]["message"]
    answer = post_form(resnet_server, model="resnet18", top_k="2")
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2
    assert post_form(resnet_server, top_k="99").status_code == 422
    both = httpx.post(
        f"{resnet_server.url}/v1/classify/batch",
        files=[("file", ("a.jpg", jpeg("chelsea"), "image/jpeg"))],
        data={"model": "no_such_model"},
        timeout=30,
    )
    assert both.status_code == 404


def test_no_content_type_is_a_sentence(resnet_server: Server) -> None:
    answer = httpx.post(f"{resnet_server.url}/v1/classify", content=jpeg("chelsea"), timeout=30)
    assert answer.status_code == 415
    message = answer.json()["error"]["message"]
    assert "no Content-Type header" in message
    assert "not no" not in message


def test_cached_answer_keeps_its_batch_size(resnet_server: Server) -> None:
    data = jpeg("coffee", quality=71)
    first = post_form_bytes(resnet_server, data)
    again = post_form_bytes(resnet_server, data)
    assert (first["cached"], again["cached"]) == (False, True)
    assert again["batch_size"] == first["batch_size"] >= 1
    assert again["timings"]["queue_ms"] == again["timings"]["inference_ms"] == 0
    assert again["predictions"] == first["predictions"]


def post_form_bytes(server: Server, data: bytes) -> dict[str, object]:
    answer = httpx.post(
        f"{server.url}/v1/classify",
        content=data,
        headers={"content-type": "image/jpeg"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_random_weights_are_flagged(resnet_server: Server, lite_server: Server) -> None:
    assert post_form(resnet_server).json()["weights"] == "random"
    assert httpx.get(f"{resnet_server.url}/v1/models").json()[0]["weights"] == "random"
    assert post_form(lite_server).json()["weights"] == "pretrained"
    assert httpx.get(f"{lite_server.url}/v1/models").json()[0]["weights"] == "pretrained"


def test_standalone_metrics_without_noise(resnet_server: Server) -> None:
    assert httpx.get(f"{resnet_server.url}/nowhere").status_code == 404
    text = httpx.get(f"{resnet_server.url}/metrics", timeout=10).text
    assert "_created" not in text
    for family in (
        "resnet_serve_workers",
        "resnet_serve_workers_needed",
        "resnet_serve_queue_in_flight",
        "resnet_serve_dead_letters",
        "resnet_serve_reclaimed_jobs_total",
        "resnet_serve_dead_lettered_total",
        "resnet_serve_bulk_queue_depth",
    ):
        assert f"# TYPE {family} " not in text
    # Readiness probes while loading (tests.servers polls /readyz) are answers, not errors.
    assert 'resnet_serve_errors_total{code="not_ready"}' not in text
    assert 'route="unmatched",status="404"' in text
    log = resnet_server.log()
    assert "WARNING" not in "".join(line for line in log.splitlines() if "not_ready" in line)

"""A gateway nothing can knock over, against a real `resnet-serve serve` over real HTTP:
memory budgets, parsing off the event loop, HTTP limits, client hang-ups.

The server gets a small explicit memory budget so hostile loads are cheap to run here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from tests.hostile import (
    Prober,
    kserve_bomb,
    megapixels_png,
    peak_rss_bytes,
    pixels_json,
    reset_peak,
    rss_bytes,
)
from tests.images import jpeg
from tests.servers import Server, run_server

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
BUDGET = 192 * MIB  # bodies 40%, decoding 60% (api/limits/budget.py)
DECODE_BUDGET = BUDGET - int(BUDGET * 0.4)
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
MIN_BODY_RATE = 1000  # bytes/s, after the grace period
RATE_GRACE_S = 0.5
MAX_CONNECTIONS = 48


@pytest.fixture(scope="module")
def server(home: Path, logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    spool = tmp_path_factory.mktemp("spool")
    with run_server(
        home,
        logs,
        "--weights",
        "random",
        memory_budget_bytes=str(BUDGET),
        budget_wait_ms="200",
        header_timeout_s=str(HEADER_TIMEOUT_S),
        body_timeout_s=str(BODY_TIMEOUT_S),
        min_body_rate_bytes_s=str(MIN_BODY_RATE),
        body_rate_grace_s=str(RATE_GRACE_S),
        max_connections=str(MAX_CONNECTIONS),
        max_header_bytes=str(16 * 1024),
        response_cache_entries="0",
        extra_env={"TMPDIR": str(spool)},
    ) as started:
        started.spool_dir = spool  # type: ignore[attr-defined]
        # Warm: the first request loads lazily-imported code paths.
        assert classify(started, jpeg("chelsea")).status_code == 200
        yield started


def classify(server: Server, data: bytes, media: str = "image/jpeg") -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/classify", content=data, headers={"content-type": media}, timeout=60
    )


def settle_rss(server: Server, target: float, timeout_s: float = 15) -> int:
    deadline = time.monotonic() + timeout_s
    rss = rss_bytes(server.process.pid)
    while rss > target and time.monotonic() < deadline:
        time.sleep(0.25)
        rss = rss_bytes(server.process.pid)
    return rss


def test_an_image_that_can_never_fit_is_refused_for_good_without_decoding(server: Server) -> None:
    """40 MP RGBA peaks near 900 MB in the decoder: more than the whole decode budget,
    so it is a 413, every time, and the gateway never holds its pixels."""
    huge = megapixels_png(40)
    reset_peak(server.process.pid)
    before = rss_bytes(server.process.pid)
    decodes = server.metric("resnet_serve_decode_duration_seconds_count")
    for _ in range(3):
        response = classify(server, huge, "image/png")
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "too_many_pixels"
        assert "Retry-After" not in response.headers
    assert server.metric("resnet_serve_decode_duration_seconds_count") == decodes
    assert peak_rss_bytes(server.process.pid) - before < 64 * MIB


def test_parallel_large_images_wait_or_get_503_and_memory_comes_back(server: Server) -> None:
    """16 parallel 3 MP RGBA PNGs need ~66 MB each to decode; the budget holds about
    one and a half: each waits its turn briefly or gets 503 with Retry-After, the peak
    stays within the budget, and RSS returns to its idle level afterwards."""
    png = megapixels_png(3)
    idle = settle_rss(server, 0, timeout_s=0)
    reset_peak(server.process.pid)
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: classify(server, png, "image/png"), range(16)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "queue_full"
            assert int(response.headers["Retry-After"]) >= 1
    grown = peak_rss_bytes(server.process.pid) - idle
    assert grown < BUDGET, f"peak grew {grown / MIB:.0f} MiB"
    after = settle_rss(server, idle * 1.2)
    assert after <= idle * 1.2, f"idle {idle / MIB:.0f} MiB, after the burst {after / MIB:.0f} MiB"


@pytest.mark.parametrize("kind", ["uint8", "bytes"])
def test_kserve_bombs_are_refused_before_parsing(server: Server, kind: str) -> None:
    """58 KB of gzip that inflates to 60 MB of JSON elements: refused by counting
    elements, never parsed; a probe beside it answers within 2 s."""
    bomb = kserve_bomb(60_000_000, kind)
    reset_peak(server.process.pid)
    before = rss_bytes(server.process.pid)
    with Prober(server.url) as prober:
        for _ in range(4):
            response = httpx.post(
                f"{server.url}/v2/models/resnet18/infer",
                content=bomb,
                headers={"content-type": "application/json", "content-encoding": "gzip"},
                timeout=60,
            )
            assert response.status_code == 413, response.text
            assert "elements" in response.json()["error"]
    assert prober.failures == 0
    assert prober.worst_s < 2.0, prober.latencies
    # The inflated body is held (bounded by max_request_bytes); nothing 16x it.
    assert peak_rss_bytes(server.process.pid) - before < 140 * MIB


def test_large_valid_kserve_json_is_parsed_off_the_event_loop(server: Server) -> None:
    """5 crops as nested JSON (2 MB, 750 k elements, ~0.4 s of parsing; its ~64 MB
    parsing cost fits the body budget): parsed in a parser process; probes beside it
    keep answering."""
    body = pixels_json(5)
    with Prober(server.url) as prober:
        for _ in range(3):
            response = httpx.post(
                f"{server.url}/v2/models/resnet18/infer",
                content=body,
                headers={"content-type": "application/json"},
                timeout=120,
            )
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["shape"] == [5, 1000]
    assert prober.failures == 0
    assert prober.worst_s < 2.0, prober.latencies


def test_multipart_uploads_never_spool_to_disk(server: Server) -> None:
    """A 6 MB multipart upload sent slowly: while it arrives, the server holds no file
    in its temporary directory (starlette would spool past 1 MB)."""
    spool: Path = server.spool_dir  # type: ignore[attr-defined]
    payload = bytes(6 * MIB)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    body = head + payload + f"\r\n--{boundary}--\r\n".encode()
    seen: list[str] = []
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for start in range(0, len(body), MIB):
            sock.sendall(body[start : start + MIB])
            time.sleep(0.1)
            seen += open_files(server.process.pid, spool)
        answer = sock.recv(65536)
    assert seen == []
    assert b" 422 " in answer.split(b"\r\n")[0] or b" 415 " in answer.split(b"\r\n")[0]


def open_files(pid: int, directory: Path) -> list[str]:
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(directory)) or "(deleted)" in target:
            found.append(target)
    return found


def port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def closed_by_server(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_unfinished_headers_and_idle_connections_are_closed(server: Server) -> None:
    with (
        socket.create_connection(("127.0.0.1", port(server))) as idle,
        socket.create_connection(("127.0.0.1", port(server))) as slow,
    ):
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(3):  # a byte now and then never resets the header deadline
            time.sleep(HEADER_TIMEOUT_S / 4)
            slow.sendall(b"a")
        assert closed_by_server(idle, HEADER_TIMEOUT_S * 10) == b""
        assert closed_by_server(slow, HEADER_TIMEOUT_S * 10) == b""
    # A keep-alive connection keeps working across requests.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT_S * 1.5)


def test_oversized_headers_are_refused_without_growing_memory(server: Server) -> None:
    reset_peak(server.process.pid)
    before = rss_bytes(server.process.pid)
    with socket.create_connection(("127.0.0.1", port(server))) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        sent = 0
        try:
            while sent < 32 * 1024 * 1024:  # 32 MB of headers, unless cut off first
                sock.sendall(filler)
                sent += len(filler)
        except OSError:
            pass  # the server closed the connection while we still sent: expected
        answer = closed_by_server(sock, 10) or b""
    assert sent < 32 * 1024 * 1024
    # The 431 may be lost to a reset: the client was still sending when it came.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert peak_rss_bytes(server.process.pid) - before < 16 * MIB


def test_headers_over_the_bound_get_431_and_headers_under_it_pass(server: Server) -> None:
    big = b"X-Filler: " + b"a" * (20 * 1024) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port(server))) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        answer = closed_by_server(sock, 10)
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"code": "headers_too_large"' in answer
    cookie = "a" * (12 * 1024)  # a large but legitimate header
    assert httpx.get(f"{server.url}/healthz", headers={"cookie": cookie}).status_code == 200


def test_headers_under_the_bound_pass_when_they_arrive_in_many_reads(server: Server) -> None:
    """A head is measured once: the reads it arrives in are never added to the headers
    parsed from them."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"a" * (12 * 1024) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port(server))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(head), 1024):
            sock.sendall(head[i : i + 1024])
            time.sleep(0.01)  # each piece its own read
        sock.settimeout(10)
        with sock.makefile("rb") as reader:
            assert read_response(reader) == 200


def test_a_request_after_a_large_body_on_one_connection_is_served(server: Server) -> None:
    """A read may hold the end of one body and the head of the next request: the body's
    bytes never count against the next head's bound."""
    body = jpeg("chelsea")
    assert len(body) > 16 * 1024
    upload = (
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", port(server))) as sock:
        sock.sendall(upload + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(30)
        with sock.makefile("rb") as reader:
            statuses = [read_response(reader) for _ in range(2)]
    assert statuses == [200, 200]


def read_response(reader: BinaryIO) -> int:
    """The status of the next response on a connection, its body read past."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    reader.read(length)
    return status


def test_connections_past_the_cap_are_closed_at_once(server: Server) -> None:
    sockets = [socket.create_connection(("127.0.0.1", port(server))) for _ in range(64)]
    try:
        closed = sum(closed_by_server(s, 0.5) is not None for s in sockets)
    finally:
        for s in sockets:
            s.close()
    assert closed >= 64 - MAX_CONNECTIONS
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_body_that_never_arrives_gets_408(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", port(server))) as sock:
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" + bytes(100)
        )
        answer = closed_by_server(sock, BODY_TIMEOUT_S * 10)
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer


def test_a_client_hang_up_is_client_closed_not_a_500(server: Server) -> None:
    errors_500 = server.metric("resnet_serve_requests_total", status="500")
    closed = server.metric("resnet_serve_requests_total", status="499")
    log_lines = len(server.log().splitlines())
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port(server))) as sock:
            sock.sendall(
                b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + bytes(1000)
            )
            time.sleep(0.2)
    deadline = time.monotonic() + 10
    while server.metric("resnet_serve_requests_total", status="499") < closed + 3:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)
    assert server.metric("resnet_serve_requests_total", status="500") == errors_500
    assert server.metric("resnet_serve_errors_total", code="client_closed") >= 3
    new = server.log().splitlines()[log_lines:]
    assert not any("Traceback" in line for line in new), new
    assert sum("client_closed" in line for line in new) == 3, new


def dribble(sock: socket.socket, head: bytes, every_s: float, piece: bytes, until_s: float) -> None:
    """Send `head`, then `piece` every `every_s` until `until_s` or the server closes."""
    sock.sendall(head)
    end = time.monotonic() + until_s
    while time.monotonic() < end:
        time.sleep(every_s)
        try:
            sock.sendall(piece)
        except OSError:
            return


def upload_head(length: int, path: str = "/v1/classify") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_dribbled_body_gets_408_and_its_connection_closed(server: Server) -> None:
    """A byte every 0.2 s (5 B/s) is under the minimum rate: 408 once the grace period
    is over, and the connection is closed although the client keeps sending (which
    would otherwise keep it open for ever, holding a place under max_connections)."""
    with (
        socket.create_connection(("127.0.0.1", port(server))) as sock,
        ThreadPoolExecutor(1) as pool,
    ):
        start = time.monotonic()
        pool.submit(dribble, sock, upload_head(1_000_000), 0.2, b"a", 15)
        answer = closed_by_server(sock, 10)
        took = time.monotonic() - start
    assert answer is not None, "the connection was kept open"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"slower than 1000 bytes/s" in answer
    assert b"connection: close" in answer.lower()
    assert took < RATE_GRACE_S + 4, took


def test_an_answer_before_the_body_closes_the_connection(server: Server) -> None:
    """413 on the declared length, before any body byte: answered and closed at once."""
    with socket.create_connection(("127.0.0.1", port(server))) as sock:
        sock.sendall(upload_head(200 * MIB))
        answer = closed_by_server(sock, 5)
    assert answer is not None, "the connection was kept open"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()


def test_declared_lengths_reserve_nothing_and_small_uploads_go_through(server: Server) -> None:
    """Three clients declaring batches of half the body budget (each would hold all of it,
    were twice the declared length reserved up front) send slowly but above the minimum
    rate; small uploads beside them all succeed."""
    small = jpeg("chelsea")
    declared = int(BUDGET * 0.4) // 2 - 1000
    head = upload_head(declared, "/v1/classify/batch").replace(
        b"image/png", b"multipart/form-data; boundary=x"
    )
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    with ThreadPoolExecutor(3) as pool:
        holders = [socket.create_connection(("127.0.0.1", port(server))) for _ in range(3)]
        try:
            for sock in holders:
                pool.submit(dribble, sock, head + part, 0.25, b"a" * 4096, 6)
            time.sleep(1)
            statuses = []
            for _ in range(12):
                statuses.append(classify(server, small).status_code)
                time.sleep(0.1)
            # Never refused for budget: each ran into the body timeout (2 s) instead.
            answers = [closed_by_server(sock, 10) or b"" for sock in holders]
            assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        finally:
            for sock in holders:
                sock.close()
    assert statuses == [200] * 12


def test_parallel_kserve_json_is_charged_only_while_it_is_parsed(server: Server) -> None:
    """12 clients at once, each a 1-crop JSON body (0.6 MB, ~13 MB to parse): held all
    the way through inference, their parse costs would pass the 77 MB body budget and
    most would get 503; charged only while each parse runs, none is refused."""
    body = pixels_json(1)

    def infer(_: int) -> int:
        return httpx.post(
            f"{server.url}/v2/models/resnet18/infer",
            content=body,
            headers={"content-type": "application/json"},
            timeout=120,
        ).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(infer, range(24)))
    assert statuses == [200] * 24


@pytest.fixture(scope="module")
def crowded(home: Path, logs: Path) -> Iterator[Server]:
    """16 connections at most, and a long grace for slow bodies."""
    with run_server(
        home,
        logs,
        "--weights",
        "random",
        max_connections="16",
        min_body_rate_bytes_s=str(MIN_BODY_RATE),
        body_rate_grace_s="60",
        body_timeout_s="60",
    ) as started:
        yield started


def test_at_the_cap_the_slowest_body_makes_room_for_a_new_client(crowded: Server) -> None:
    """Sixteen connections dribbling bodies fill the cap, well inside their grace period;
    new clients are still answered: one at the cap closes the slowest dribbler instead
    of being refused (idle connections are not evicted: see the cap test above)."""
    dribblers = [socket.create_connection(("127.0.0.1", port(crowded))) for _ in range(16)]
    try:
        for sock in dribblers:
            sock.sendall(upload_head(1_000_000) + b"\x89PNG")
        time.sleep(0.5)
        statuses = [classify(crowded, jpeg("chelsea")).status_code for _ in range(3)]
        evicted = sum(closed_by_server(sock, 0.5) is not None for sock in dribblers)
    finally:
        for sock in dribblers:
            sock.close()
    assert statuses == [200, 200, 200]
    assert evicted >= 1  # the first new client's room (each closes its connection after)

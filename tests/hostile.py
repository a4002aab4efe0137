"""Hostile loads shared by tests/integration/test_budgets.py and benchmarks/bench_hostile.py:
cheap to build, expensive to take in."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def blank_png(width: int, height: int, mode: str = "RGBA") -> bytes:
    """A valid all-zero PNG built row by row with zlib (never held whole as pixels):
    40 MP of RGBA is about 155 KB."""
    color_type, bands = {"RGBA": (6, 4), "RGB": (2, 3), "L": (0, 1)}[mode]
    compressor = zlib.compressobj(9)
    row = bytes(1 + bands * width)
    rows_per_piece = max(1, (4 * 1024 * 1024) // len(row))
    parts = []
    done = 0
    while done < height:
        n = min(rows_per_piece, height - done)
        parts.append(compressor.compress(row * n))
        done += n
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def megapixels_png(megapixels: float, mode: str = "RGBA") -> bytes:
    side = int((megapixels * 1e6) ** 0.5)
    return blank_png(side, side, mode)


def kserve_bomb(inflated_bytes: int, kind: str = "uint8") -> bytes:
    """A gzip KServe v2 body that inflates to about `inflated_bytes` of JSON: a long
    UINT8 `data` array, or a BYTES list of empty strings."""
    if kind == "uint8":
        element, name, datatype = b"0,", "pixels", "UINT8"
    else:
        element, name, datatype = b'"",', "images", "BYTES"
    count = inflated_bytes // len(element)
    head = json.dumps(
        {"inputs": [{"name": name, "datatype": datatype, "shape": [1, 224, 224, 3]}]}
    ).encode()
    # {"inputs": [{..., "data": [0,0,...,0]}]}
    prefix = head[: -len(b"}]}")] + b', "data": ['
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(prefix)]
    block = element * (1 << 20)
    left = count
    while left > 0:
        n = min(left, 1 << 20)
        parts.append(compressor.compress(block if n == 1 << 20 else element * n))
        left -= n
    parts.append(compressor.compress(element[:-1] + b"]}]}"))
    parts.append(compressor.flush())
    return b"".join(parts)


def pixels_json(images: int) -> bytes:
    """A valid KServe v2 request of `images` 224x224 crops as nested JSON arrays."""
    row = "[" + ",".join(["[1,2,3]"] * 224) + "]"
    image = "[" + ",".join([row] * 224) + "]"
    data = "[" + ",".join([image] * images) + "]"
    return (
        '{"inputs":[{"name":"pixels","datatype":"UINT8","shape":['
        + f"{images},224,224,3"
        + '],"data":'
        + data
        + "}]}"
    ).encode()


def gunzip_size(body: bytes) -> int:
    return len(gzip.decompress(body))


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += process_tree(int(child))
    return found


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def rss_bytes(pid: int) -> int:
    """Resident bytes of the process and its children now."""
    return sum(status_kib(p, "VmRSS") for p in process_tree(pid)) * 1024


def reset_peak(pid: int) -> None:
    """Start the processes' high-water marks (VmHWM) afresh from their RSS now."""
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{p}/clear_refs").write_text("5")


def peak_rss_bytes(pid: int) -> int:
    """The process's own high-water mark (VmHWM) plus its children's."""
    return sum(status_kib(p, "VmHWM") for p in process_tree(pid)) * 1024


class Prober:
    """GET /healthz every 50 ms in a thread, beside a hostile load: the slowest answer
    is what a client would have seen; failed probes are counted, not raised."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/healthz"
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    client.get(self.url).raise_for_status()
                except httpx.HTTPError:
                    self.failures += 1
                self.latencies.append(time.perf_counter() - start)
                self._stop.wait(0.05)

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=0.0)


def hang_up_after_sending(port: int, body: bytes, clients: int, after_s: float) -> None:
    """`clients` connections each send a whole raw upload, wait `after_s` (their jobs
    are queued by then) and hang up without reading the answer."""
    request = (
        b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    hangers = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    for sock in hangers:
        sock.sendall(request)
    time.sleep(after_s)
    for sock in hangers:
        sock.close()


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """(status line and headers, body) of one HTTP/1.1 answer on `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def answers_to_headers_alone(
    port: int, length: int, wanted: int, tries: int = 80, wait_s: float = 1
) -> list[tuple[bytes, bytes, float]]:
    """(head, body, seconds to the answer) of up to `wanted` answers to uploads whose
    headers (declaring `length` bytes of image/jpeg) come without their body, each on a
    new connection. One not answered within `wait_s` (its body awaited) is closed and
    another sent, `tries` in all, 0.1 s apart (under a flood a probe may come while the
    queue has room: a CI run waited out ~15 probes, 37 s, before its third answer)."""
    head_only = (
        f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    answers: list[tuple[bytes, bytes, float]] = []
    for _ in range(tries):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(wait_s)
            start = time.perf_counter()
            sock.sendall(head_only)
            with contextlib.suppress(TimeoutError):
                head, body = read_answer(sock)
                answers.append((head, body, time.perf_counter() - start))
        if len(answers) == wanted:
            break
        time.sleep(0.1)
    return answers


def answers_to_headers_alone_under_flood(
    send: Callable[[], object], clients: int, port: int, length: int, wanted: int
) -> list[tuple[bytes, bytes, float]]:
    """`answers_to_headers_alone` while `clients` threads each call `send` in a loop."""
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            send()

    with ThreadPoolExecutor(clients) as pool:
        floods = [pool.submit(flood) for _ in range(clients)]
        try:
            return answers_to_headers_alone(port, length, wanted)
        finally:
            stop.set()
            for future in floods:
                future.result()

"""Hostile and unusual uploads against a real `resnet-serve serve` over real HTTP.

Every case states the exact status and error code it must get; unusual but valid images
must classify (200). Afterwards the service must still be ready and must not have
answered anything with a 500.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.images import encode, photo
from tests.servers import Server

pytestmark = pytest.mark.slow

MB = 1024 * 1024
OVERSIZED = 21 * MB  # the default max_upload_bytes is 20 MiB


# ---------------------------------------------------------------------------------------
# Bytes


def chelsea(fmt: str = "JPEG", mode: str = "RGB", **params: object) -> bytes:
    return encode(photo("chelsea").convert(mode), fmt, **params)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def rgb_png(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@functools.cache
def bomb() -> bytes:
    """A valid all-black 12000x12000 RGB PNG: 432 MB of pixels in about 420 KB."""
    compressor = zlib.compressobj(9)
    rows = bytes(1 + 3 * 12000) * 100
    stream = [compressor.compress(rows) for _ in range(120)]
    return rgb_png(12000, 12000, b"".join([*stream, compressor.flush()]))


def flipped(data: bytes, start: int, count: int) -> bytes:
    damaged = bytearray(data)
    for i in range(start, start + count):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def png_bad_idat_crc() -> bytes:
    data = chelsea("PNG")
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    return flipped(data, at + 4 + length, 1)  # the first IDAT chunk's CRC


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.jpg", b"not really")
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [photo(n).resize((320, 240)) for n in ("chelsea", "coffee", "rocket")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)


def rgba_png() -> bytes:
    rgb = np.asarray(photo("rocket"))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    return encode(Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA"), "PNG")


def sixteen_bit_png() -> bytes:
    ramp = np.linspace(0, 65535, 300 * 400).reshape(300, 400).astype(np.uint16)
    return encode(Image.fromarray(ramp), "PNG")


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return chelsea("JPEG", exif=exif.tobytes())


def oversized_stream() -> Iterator[bytes]:
    """No Content-Length (chunked): the server must count what actually arrives."""
    yield b"\xff\xd8\xff"
    for _ in range(OVERSIZED // MB):
        yield bytes(MB)


GIF_SCREEN = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)


# ---------------------------------------------------------------------------------------
# The corpus

Request = Callable[[], dict[str, Any]]


def raw(build: Callable[[], bytes], content_type: str | None = "image/jpeg") -> Request:
    headers = {} if content_type is None else {"content-type": content_type}
    return lambda: {"content": build(), "headers": headers}


def upload(build: Callable[[], bytes], filename: str = "upload.bin") -> Request:
    return lambda: {"files": {"file": (filename, build(), "application/octet-stream")}}


def with_params(request: Request, **params: str) -> Request:
    return lambda: {**request(), "params": params}


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str | None  # None: a classification (200)
    request: Request
    method: str = "POST"
    path: str = "/v1/classify"


def ok(name: str, request: Request) -> Case:
    return Case(name, 200, None, request)


CORPUS = [
    # Nothing there
    Case("empty-multipart-file", 400, "empty_body", upload(lambda: b"", "empty.jpg")),
    Case("empty-raw-body", 400, "empty_body", raw(lambda: b"")),
    # Not images at all (415)
    Case("text-file", 415, "not_an_image", upload(lambda: b"hello\n" * 50, "notes.txt")),
    Case("html", 415, "not_an_image", upload(lambda: b"<html><script>x()</script></html>")),
    Case("pdf-header", 415, "not_an_image", upload(lambda: b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n")),
    Case("zip", 415, "not_an_image", upload(zip_file, "cat.zip")),
    Case("random-bytes", 415, "not_an_image", raw(lambda: np.random.default_rng(3).bytes(8192))),
    Case("svg", 415, "not_an_image", raw(lambda: b"<svg width='9' height='9'/>", "image/svg+xml")),
    Case("eps-never-reaches-ghostscript", 415, "not_an_image", raw(lambda: b"%!PS-Adobe-3.0 EPSF")),
    # Images that cannot be decoded (422)
    Case("truncated-jpeg", 422, "corrupt_image", raw(lambda: chelsea()[:8000])),
    Case("truncated-png", 422, "corrupt_image", raw(lambda: chelsea("PNG")[:20000], "image/png")),
    Case(
        "jpeg-middle-bytes-flipped",
        422,
        "corrupt_image",
        raw(lambda: flipped(chelsea(), len(chelsea()) // 2, 200)),
    ),
    Case("png-bad-ihdr-crc", 422, "corrupt_image", raw(lambda: flipped(chelsea("PNG"), 29, 1))),
    Case("gif-zero-frames", 422, "corrupt_image", raw(lambda: GIF_SCREEN + b";", "image/gif")),
    Case(
        "gif-garbage-frame",
        422,
        "corrupt_image",
        raw(lambda: GIF_SCREEN + b"," + bytes(4) + b"\x0a\x00\x0a\x00\x00\x08\x05garba\x00;"),
    ),
    Case("jpeg-markers-only", 422, "corrupt_image", raw(lambda: b"\xff\xd8\xff\xd9")),
    # Too big (413)
    Case(
        "declared-huge-png-header",
        413,
        "too_many_pixels",
        raw(lambda: rgb_png(20000, 20000, zlib.compress(bytes(64))), "image/png"),
    ),
    Case("decompression-bomb-png", 413, "too_many_pixels", upload(bomb, "bomb.png")),
    Case(
        "oversized-raw-body",
        413,
        "payload_too_large",
        raw(lambda: b"\xff\xd8\xff" + bytes(OVERSIZED)),
    ),
    Case(
        "oversized-multipart",
        413,
        "payload_too_large",
        upload(lambda: b"\xff\xd8\xff" + bytes(OVERSIZED), "huge.jpg"),
    ),
    Case(
        "oversized-chunked-raw-body",
        413,
        "payload_too_large",
        lambda: {"content": oversized_stream(), "headers": {"content-type": "image/jpeg"}},
    ),
    # Unusual but valid images (200)
    ok("1x1-png", raw(lambda: encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "image/png")),
    ok("1x10000-strip", upload(lambda: encode(photo("coffee").resize((1, 10000)), "PNG"))),
    ok("10000x1-strip", upload(lambda: encode(photo("coffee").resize((10000, 1)), "PNG"))),
    ok("16-bit-png", upload(sixteen_bit_png, "depth16.png")),
    ok("cmyk-jpeg", upload(lambda: chelsea("JPEG", "CMYK"), "cmyk.jpg")),
    ok("rgba-png", upload(rgba_png, "alpha.png")),
    ok("animated-palette-gif", raw(animated_gif, "image/gif")),
    ok("bmp", raw(lambda: chelsea("BMP"), "image/bmp")),
    ok("webp", raw(lambda: chelsea("WEBP"), "image/webp")),
    ok("tiff", raw(lambda: chelsea("TIFF"), "image/tiff")),
    ok("ico", raw(lambda: chelsea("ICO"), "image/x-icon")),
    ok("ppm", raw(lambda: chelsea("PPM"), "image/x-portable-pixmap")),
    ok("grayscale-jpeg", raw(lambda: chelsea("JPEG", "L"))),
    ok("progressive-jpeg", raw(lambda: chelsea("JPEG", progressive=True, quality=70))),
    ok("exif-orientation-6-jpeg", raw(exif_rotated_jpeg)),
    ok("png-bad-idat-crc-pixels-intact", raw(png_bad_idat_crc, "image/png")),
    ok("jpeg-labelled-image-png", raw(chelsea, "image/png")),
    ok("jpeg-as-octet-stream", raw(chelsea, "application/octet-stream")),
    ok("path-traversal-filename", upload(chelsea, "../../../etc/passwd")),
    ok("unicode-filename", upload(chelsea, "кот 🐈.jpg")),
    ok("top-k-20", with_params(raw(chelsea), top_k="20")),
    # The request itself is wrong
    Case("text-plain-with-jpeg-bytes", 415, "unsupported_media_type", raw(chelsea, "text/plain")),
    Case("no-content-type", 415, "unsupported_media_type", raw(chelsea, None)),
    Case(
        "form-urlencoded",
        415,
        "unsupported_media_type",
        lambda: {"data": {"file": "cat.jpg"}},
    ),
    Case(
        "multipart-without-file-field",
        422,
        "invalid_parameter",
        lambda: {"files": {"image": ("cat.jpg", chelsea(), "image/jpeg")}},
    ),
    Case(
        "multipart-file-as-text-field",
        422,
        "invalid_parameter",
        lambda: {"data": {"file": "cat.jpg"}, "files": {"other": ("x.jpg", b"x", "image/jpeg")}},
    ),
    Case(
        "multipart-without-boundary",
        422,
        "invalid_parameter",
        raw(lambda: b"--x\r\n\r\n", "multipart/form-data"),
    ),
    Case(
        "two-files-on-single-route",
        413,
        "too_many_files",
        lambda: {"files": [("file", ("a.jpg", chelsea(), "image/jpeg"))] * 2},
    ),
    Case("top-k-0", 422, "invalid_parameter", with_params(raw(chelsea), top_k="0")),
    Case("top-k-21", 422, "invalid_parameter", with_params(raw(chelsea), top_k="21")),
    Case("top-k-abc", 422, "invalid_parameter", with_params(raw(chelsea), top_k="abc")),
    Case("unknown-model", 404, "unknown_model", with_params(raw(chelsea), model="resnet9000")),
    Case("get-classify", 405, "method_not_allowed", dict, method="GET"),
    Case("put-classify", 405, "method_not_allowed", raw(chelsea), method="PUT"),
    Case("unknown-route", 404, "not_found", raw(chelsea), path="/v1/clasify"),
]


# ---------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def client(resnet_server: Server) -> Iterator[httpx.Client]:
    timeout = httpx.Timeout(20.0, connect=5.0)
    with httpx.Client(base_url=resnet_server.url, timeout=timeout) as client:
        yield client


@pytest.fixture(scope="module")
def errors_before(resnet_server: Server) -> float:
    """500s the server had answered before this module's first request."""
    return resnet_server.metric("resnet_serve_requests_total", status="500")


def json_body(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.usefixtures("errors_before")
@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_corpus(client: httpx.Client, case: Case) -> None:
    kwargs = case.request()
    response = client.request(case.method, case.path, **kwargs)
    body = json_body(response)
    request_id = response.headers["x-request-id"]
    assert response.status_code == case.status, body
    if case.code is None:
        assert body["request_id"] == request_id
        top_k = int(kwargs.get("params", {}).get("top_k", 3))
        assert len(body["predictions"]) == top_k
        assert all(0.0 <= p["score"] <= 1.0 for p in body["predictions"])
    else:
        assert set(body) == {"error"}
        assert body["error"]["code"] == case.code, body
        assert body["error"]["message"]
        assert body["error"]["request_id"] == request_id


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30
    assert len({case.name for case in CORPUS}) == len(CORPUS)


BATCH = [
    ("good.jpg", chelsea, None),
    ("notes.txt", lambda: b"hello\n" * 50, "not_an_image"),
    ("truncated.png", lambda: chelsea("PNG")[:20000], "corrupt_image"),
    ("empty.jpg", lambda: b"", "empty_body"),
    ("coffee.png", lambda: encode(photo("coffee"), "PNG"), None),
    ("bomb.png", bomb, "too_many_pixels"),
    ("cmyk.jpg", lambda: chelsea("JPEG", "CMYK"), None),
]


@pytest.mark.usefixtures("errors_before")
def test_batch_reports_each_file_in_order(client: httpx.Client) -> None:
    files = [("file", (name, build(), "application/octet-stream")) for name, build, _ in BATCH]
    response = client.post("/v1/classify/batch", files=files, params={"top_k": "2"})
    body = json_body(response)
    assert response.status_code == 200, body
    request_id = response.headers["x-request-id"]
    assert body["request_id"] == request_id
    assert [item["filename"] for item in body["results"]] == [name for name, _, _ in BATCH]
    for item, (name, _, code) in zip(body["results"], BATCH, strict=True):
        if code is None:
            assert item["error"] is None, name
            assert len(item["result"]["predictions"]) == 2, name
        else:
            assert item["result"] is None, name
            assert item["error"]["code"] == code, name
            assert item["error"]["request_id"] == request_id


@pytest.mark.parametrize(
    ("offered", "echoed"),
    [("client-id_1.2", True), ("has spaces", False), ("x" * 65, False)],
    ids=["valid", "spaces", "too-long"],
)
def test_request_id_is_echoed_only_when_safe(
    client: httpx.Client, offered: str, echoed: bool
) -> None:
    headers = {"x-request-id": offered, "content-type": "image/jpeg"}
    response = client.post("/v1/classify", content=b"", headers=headers)
    body = json_body(response)
    assert response.status_code == 400
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    if echoed:
        assert response.headers["x-request-id"] == offered
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_service_survives_the_corpus(
    client: httpx.Client, resnet_server: Server, errors_before: float
) -> None:
    """Runs last in this file: after everything above, the service still works."""
    response = client.post(
        "/v1/classify", content=chelsea(quality=80), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3
    assert client.get("/readyz").status_code == 200
    assert resnet_server.process.poll() is None
    assert resnet_server.metric("resnet_serve_requests_total", status="500") == errors_before

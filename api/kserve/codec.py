"""The KServe v2 wire: request bodies (JSON, optionally followed by binary tensor data,
optionally compressed) in, response bodies out.

Binary tensor data extension: `Inference-Header-Content-Length` gives the JSON header's
size; each tensor with a `binary_data_size` parameter takes that many bytes after it, in
order. A BYTES element is a 4-byte little-endian length and then its bytes.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from typing import Any

from resnet_serve.api.kserve.schemas import HEADER_LENGTH
from resnet_serve.api.limits.budget import Grant
from resnet_serve.shared.errors import InvalidTensor, PayloadTooLarge, UnsupportedMediaType

_LENGTH = struct.Struct("<I")
# zlib's wbits: 16 + 15 reads a gzip stream, 15 a zlib ("deflate" in HTTP) stream.
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


INFLATE_STEP_BYTES = 1024 * 1024


async def inflate(
    body: bytes, encoding: str | None, limit: int, max_elements: int, grant: Grant
) -> bytes:
    """Undo a gzip/deflate Content-Encoding (tritonclient's request compression) a step
    at a time: each step's bytes are reserved from the body budget before they are
    kept, and its commas counted, so a small body that inflates
    to more elements than any valid request is refused (413) after a few steps, holding
    a few MB, instead of after inflating all of it."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in _WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported (gzip, deflate)"
        )
    inflater = zlib.decompressobj(_WBITS[encoding])
    parts: list[bytes] = []
    size = commas = 0
    pending = body
    while True:
        try:
            chunk = inflater.decompress(pending, INFLATE_STEP_BYTES)
        except zlib.error as exc:
            raise InvalidTensor(f"the {encoding} body could not be decompressed: {exc}") from exc
        pending = inflater.unconsumed_tail
        size += len(chunk)
        commas += chunk.count(b",")
        if size > limit:
            raise PayloadTooLarge(f"the decompressed request body is larger than {limit} bytes")
        if commas >= max_elements:
            raise PayloadTooLarge(
                f"the request holds more than {max_elements} JSON elements, more than any "
                "valid request for this model (send large tensors as binary data)"
            )
        await grant.grow_to(len(body) + size)
        parts.append(chunk)
        if inflater.eof or (not chunk and not pending):
            break
        await asyncio.sleep(0)  # let other requests run between steps
    if not inflater.eof:
        raise InvalidTensor(f"the {encoding} body is truncated")
    return b"".join(parts)


def split(body: bytes, declared: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tensor data that follows it), as the header length declares."""
    if declared is None:
        return body, memoryview(b"")
    declared = declared.strip()
    if not (declared.isascii() and declared.isdigit()):
        raise InvalidTensor(f"{HEADER_LENGTH} must be a byte count, not {declared!r}")
    header_length = int(declared)
    if header_length > len(body):
        raise InvalidTensor(
            f"{HEADER_LENGTH} is {header_length} but the body has only {len(body)} bytes"
        )
    return body[:header_length], memoryview(body)[header_length:]


class BinaryData:
    """Hands out the binary part of a request, one tensor at a time, in order."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: int, name: str) -> memoryview:
        end = self._offset + size
        if end > len(self._data):
            raise InvalidTensor(
                f"input {name!r} claims {size} bytes of binary data but only "
                f"{len(self._data) - self._offset} remain"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def check_consumed(self) -> None:
        left = len(self._data) - self._offset
        if left:
            raise InvalidTensor(f"{left} bytes of binary data belong to no input")


def unpack_bytes(raw: memoryview, name: str, count: int) -> list[bytes]:
    """A serialized BYTES tensor of `count` elements: repeated (uint32 little-endian
    length, bytes). More elements are refused as soon as they show (a few bytes each
    would otherwise become millions of objects)."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(items) == count:
            raise InvalidTensor(
                f"input {name!r} holds more than the {count} elements its shape says"
            )
        if offset + _LENGTH.size > len(raw):
            raise InvalidTensor(f"input {name!r}: BYTES data ends inside an element's length")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + size > len(raw):
            raise InvalidTensor(
                f"input {name!r}: BYTES element {len(items)} claims {size} bytes, "
                f"only {len(raw) - offset} remain"
            )
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    return items


def pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def flatten(data: list[Any]) -> list[Any]:
    """Row-major elements of a flat or nested JSON array (no recursion: depth is the
    client's choice)."""
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def encode_response(header: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is only JSON)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)

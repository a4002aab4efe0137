"""The KServe v2 wire helpers: BYTES tensors, nested data, body splitting, compression."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from resnet_serve.api.kserve.codec import (
    BinaryData,
    encode_response,
    flatten,
    inflate,
    pack_bytes,
    split,
    unpack_bytes,
)
from resnet_serve.api.limits.budget import ByteBudget, body_grant
from resnet_serve.shared.errors import InvalidTensor, PayloadTooLarge, UnsupportedMediaType


def test_bytes_tensors_round_trip_with_tritonclients_own_serializer() -> None:
    items = [b"", b"\x00\xff" * 300, "é".encode()]
    theirs = serialize_byte_tensor(np.array(items, dtype=np.object_)).item()
    assert pack_bytes(items) == theirs
    assert unpack_bytes(memoryview(theirs), "images", 3) == items
    assert list(deserialize_bytes_tensor(pack_bytes(items))) == items


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\x05\x00", "ends inside an element's length"), (b"\x05\x00\x00\x00abc", "claims 5 bytes")],
)
def test_truncated_bytes_tensors_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidTensor, match=message):
        unpack_bytes(memoryview(raw), "images", 1)


def test_more_elements_than_the_shape_says_are_refused_at_the_first_extra() -> None:
    """A million empty elements are 4 MB on the wire; they never become a million objects."""
    raw = pack_bytes([b""] * 1_000_000)
    with pytest.raises(InvalidTensor, match="more than the 2 elements"):
        unpack_bytes(memoryview(raw), "images", 2)


def test_flatten_reads_nested_data_row_major_at_any_depth() -> None:
    assert flatten([[1, 2], [3, [4, 5]], 6]) == [1, 2, 3, 4, 5, 6]
    deep: list[object] = [7]
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    assert flatten(deep) == [7]


def test_split_and_binary_data_hand_out_each_tensor_once() -> None:
    header, binary = split(b'{"a":1}abcdef', "7")
    assert header == b'{"a":1}'
    data = BinaryData(binary)
    assert bytes(data.take(2, "x")) == b"ab"
    with pytest.raises(InvalidTensor, match="belong to no input"):
        data.check_consumed()
    with pytest.raises(InvalidTensor, match="only 4 remain"):
        data.take(5, "y")
    for declared in ("99", "-1", "²", "seven"):
        with pytest.raises(InvalidTensor):
            split(b"{}", declared)


def test_decompression_is_bounded() -> None:
    body = b'{"inputs": []}'

    async def inflated(data: bytes, encoding: str | None, limit: int = 100) -> bytes:
        async with body_grant(ByteBudget("body", 10_000_000, 0.1)) as grant:
            return await inflate(data, encoding, limit, 1_000, grant)

    assert asyncio.run(inflated(gzip.compress(body), "gzip")) == body
    assert asyncio.run(inflated(zlib.compress(body), "deflate")) == body
    assert asyncio.run(inflated(body, None)) == body
    bomb = gzip.compress(b"\x00" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(PayloadTooLarge):
        asyncio.run(inflated(bomb, "gzip", 1_000_000))
    with pytest.raises(InvalidTensor, match="truncated"):
        asyncio.run(inflated(gzip.compress(body)[:-8], "gzip"))
    with pytest.raises(UnsupportedMediaType):
        asyncio.run(inflated(body, "br"))


def test_encode_response_puts_binary_after_the_json_header() -> None:
    body, length = encode_response({"outputs": []}, [b"\x01\x02"])
    assert length is not None
    assert body[:length] == b'{"outputs":[]}'
    assert body[length:] == b"\x01\x02"
    assert encode_response({"outputs": []}, []) == (b'{"outputs":[]}', None)

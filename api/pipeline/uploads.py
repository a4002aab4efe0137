"""Read image uploads (multipart `file` fields or a raw `image/*` body) within size limits.

The body is streamed and counted, so an oversized upload is refused after at most
`limit` bytes, whatever Content-Length claims; it must arrive within `body_timeout_s`,
and, after `body_rate_grace_s`, no slower than `min_body_rate_bytes_s` on average (408,
and the connection is closed: api/limits/unfinished.py); the bytes it will hold are
reserved from the process's body budget (api/limits/budget.py) as they arrive, never
for a declared length up front, so bodies in flight never pass it and a client that
declares much and sends little holds little. Multipart files stay in memory (within
those limits): nothing spools to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from resnet_serve.api.limits.budget import ByteBudget, Grant, body_grant
from resnet_serve.shared.errors import (
    InvalidParameter,
    PayloadTooLarge,
    RequestTimeout,
    TooManyFiles,
    UnsupportedMediaType,
)

RAW_TYPES = ("image/", "application/octet-stream")
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Text fields a multipart body may carry besides its files (`model`, `top_k`).
MAX_TEXT_FIELDS = 8
# Bytes held per body byte at the peak: the chunks and their join (raw), or the parser's
# in-memory file and the copy read from it (multipart).
HELD_PER_BODY_BYTE = 2


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How much of a body one request may send, how fast, and whose budget it uses."""

    grant: Grant
    timeout_s: float
    min_rate_bytes_s: float = 0.0  # 0: no minimum rate
    rate_grace_s: float = 0.0

    def read_deadline(self, start: float, received: int) -> tuple[float, str]:
        """When the next chunk must have arrived by, and what the 408 then says."""
        whole = start + self.timeout_s
        if self.min_rate_bytes_s <= 0:
            return whole, f"the request body did not arrive within {self.timeout_s:g} s"
        # Slower than the minimum on average from the start, once past the grace period.
        slow = start + max(self.rate_grace_s, received / self.min_rate_bytes_s)
        if slow < whole:
            return slow, (f"the request body arrived slower than {self.min_rate_bytes_s:g} bytes/s")
        return whole, f"the request body did not arrive within {self.timeout_s:g} s"


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    data: bytes


@contextlib.asynccontextmanager
async def body_limits(
    bodies: ByteBudget, timeout_s: float, min_rate_bytes_s: float = 0.0, rate_grace_s: float = 0.0
) -> AsyncIterator[BodyLimits]:
    """A request's share of the body budget, returned when the block ends."""
    async with body_grant(bodies) as grant:
        yield BodyLimits(grant, timeout_s, min_rate_bytes_s, rate_grace_s)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _limited(request: Request, limit: int, limits: BodyLimits) -> AsyncGenerator[bytes, None]:
    """The body's chunks, refused past `limit` bytes, past the body timeout or below the
    minimum rate; the bytes are reserved from the budget as they arrive, before they are
    kept."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    seen = 0
    start = asyncio.get_running_loop().time()
    chunks: AsyncIterator[bytes] = request.stream().__aiter__()
    while True:
        deadline, why = limits.read_deadline(start, seen)
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(why) from None
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        await limits.grant.grow_to(seen * HELD_PER_BODY_BYTE)
        yield chunk


async def read_body(request: Request, limit: int, limits: BodyLimits) -> bytes:
    """The whole body, refused past `limit` bytes."""
    return b"".join([chunk async for chunk in _limited(request, limit, limits)])


async def read_uploads(
    request: Request,
    *,
    max_files: int,
    max_file_bytes: int,
    max_request_bytes: int,
    limits: BodyLimits,
    fields: dict[str, str] | None = None,
) -> list[Upload]:
    """Every image in the request, in order. Raises a ServeError for anything else.
    A multipart body's text fields go into `fields` when it is given.

    An empty file is returned like any other: decoding rejects it (empty_body), so in a
    batch it fails only its own item.
    """
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        uploads = await _read_multipart(request, max_files, max_request_bytes, limits, fields)
    elif media_type.startswith(RAW_TYPES):
        body = await read_body(request, max_file_bytes, limits)
        uploads = [Upload(filename="body", data=body)]
    else:
        sent = f"not {media_type}" if media_type else "this request has no Content-Type header"
        raise UnsupportedMediaType(
            f"send multipart/form-data with a 'file' field or an image/* body; {sent}"
        )
    for upload in uploads:
        if len(upload.data) > max_file_bytes:
            raise PayloadTooLarge(f"{upload.filename}: larger than {max_file_bytes} bytes")
    return uploads


async def _read_multipart(
    request: Request,
    max_files: int,
    limit: int,
    limits: BodyLimits,
    fields: dict[str, str] | None,
) -> list[Upload]:
    parser = MultiPartParser(
        request.headers,
        _limited(request, limit, limits),
        max_files=max_files,
        max_fields=max_files + MAX_TEXT_FIELDS,
    )
    # Files stay in memory: the whole body is already bounded by `limit` and reserved
    # from the body budget, so a spool file could only add disk use (and, in a pod, an
    # eviction when /tmp is a small emptyDir).
    parser.spool_max_size = limit + 1
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise TooManyFiles(f"at most {max_files} files per request") from exc
        raise InvalidParameter(f"malformed multipart body: {exc.message}") from exc
    try:
        if fields is not None:
            fields.update((k, v) for k, v in form.multi_items() if isinstance(v, str))
        files = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        if not files:
            raise InvalidParameter("the multipart body has no 'file' field with a file in it")
        return [Upload(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()

"""Read image uploads (multipart `file` fields or a raw `image/*` body) within size limits.

The body is streamed and counted, so an oversized upload is refused after at most
`limit` bytes, whatever Content-Length claims.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from resnet_serve.shared.errors import (
    InvalidParameter,
    PayloadTooLarge,
    TooManyFiles,
    UnsupportedMediaType,
)

RAW_TYPES = ("image/", "application/octet-stream")
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Text fields a multipart body may carry besides its files (`model`, `top_k`).
MAX_TEXT_FIELDS = 8


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    data: bytes


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused past `limit` bytes."""
    return b"".join([chunk async for chunk in _limited(request, limit)])


async def read_uploads(
    request: Request,
    *,
    max_files: int,
    max_file_bytes: int,
    max_request_bytes: int,
    fields: dict[str, str] | None = None,
) -> list[Upload]:
    """Every image in the request, in order. Raises a ServeError for anything else.
    A multipart body's text fields go into `fields` when it is given.

    An empty file is returned like any other: decoding rejects it (empty_body), so in a
    batch it fails only its own item.
    """
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        uploads = await _read_multipart(request, max_files, max_request_bytes, fields)
    elif media_type.startswith(RAW_TYPES):
        body = b"".join([chunk async for chunk in _limited(request, max_file_bytes)])
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
    request: Request, max_files: int, limit: int, fields: dict[str, str] | None
) -> list[Upload]:
    parser = MultiPartParser(
        request.headers,
        _limited(request, limit),
        max_files=max_files,
        max_fields=max_files + MAX_TEXT_FIELDS,
    )
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

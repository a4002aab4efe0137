"""A bulk job's images from the request: multipart `file` fields, one zip (a raw
`application/zip` body or a single multipart file), or one raw image body.

Limits: `max_bulk_images` files, `max_upload_bytes` per image, `max_bulk_bytes` for them
all (a zip's uncompressed contents included). Inflating and hashing run in a thread, off
the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib

from starlette.requests import Request

from resnet_serve.api.bulk.archive import ArchiveLimits, declared_size, is_zip, read_zip
from resnet_serve.api.pipeline.uploads import (
    MULTIPART_OVERHEAD_BYTES,
    BodyLimits,
    Upload,
    read_body,
    read_uploads,
)
from resnet_serve.shared.errors import PayloadTooLarge
from resnet_serve.shared.settings import Settings

ZIP_TYPES = ("application/zip", "application/x-zip-compressed")


async def read_bulk_uploads(request: Request, settings: Settings, body: BodyLimits) -> list[Upload]:
    limits = ArchiveLimits(
        max_files=settings.max_bulk_images,
        max_file_bytes=min(settings.max_upload_bytes, settings.max_bulk_bytes),
        max_total_bytes=settings.max_bulk_bytes,
    )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ZIP_TYPES:
        data = await read_body(request, settings.max_bulk_bytes, body)
        return await _unzipped(data, body, limits)
    uploads = await read_uploads(
        request,
        max_files=settings.max_bulk_images,
        max_file_bytes=settings.max_bulk_bytes,  # a zip may be larger than one image
        max_request_bytes=settings.max_bulk_bytes + MULTIPART_OVERHEAD_BYTES,
        limits=body,
    )
    if len(uploads) == 1 and is_zip(uploads[0].data):
        return await _unzipped(uploads[0].data, body, limits)
    for upload in uploads:
        if len(upload.data) > limits.max_file_bytes:
            raise PayloadTooLarge(f"{upload.filename}: larger than {limits.max_file_bytes} bytes")
    if sum(len(upload.data) for upload in uploads) > limits.max_total_bytes:
        raise PayloadTooLarge(f"the images add up to more than {limits.max_total_bytes} bytes")
    return uploads


async def _unzipped(data: bytes, body: BodyLimits, limits: ArchiveLimits) -> list[Upload]:
    """The archive's files. What is held while inflating: the archive (its reading's
    copies are gone) plus its files, at most as large as they declare, within the job's
    limit; charged for that, so a `max_bulk_bytes` archive fits the shipped budgets."""
    contents = min(await asyncio.to_thread(declared_size, data), limits.max_total_bytes)
    body.grant.shrink_to(len(data))
    await body.grant.grow_to(len(data) + contents)
    return await asyncio.to_thread(read_zip, data, limits)


def payload_digest(uploads: list[Upload], model: str, top_k: int) -> str:
    """What an Idempotency-Key is bound to: model, top_k, and each file's name and bytes
    in order (not the multipart framing, whose boundary differs on every send)."""
    digest = hashlib.sha256(f"{model}\0{top_k}\0{len(uploads)}\0".encode())
    for upload in uploads:
        digest.update(f"{upload.filename}\0{len(upload.data)}\0".encode())
        digest.update(hashlib.sha256(upload.data).digest())
    return digest.hexdigest()

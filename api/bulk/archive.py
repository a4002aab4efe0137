"""The images in a zip upload, inflated in memory within limits; nothing is extracted.

Zip bombs: the number of files, each file's size and their total are checked on the
bytes actually inflated (the sizes an archive declares may lie), reading at most one
byte past a limit, so memory stays within the limits. Directories, symlinks and other
non-regular entries, and macOS `__MACOSX/` metadata, are skipped. Entry names are only
labels in the results: they are normalised so no absolute path, `..` or control
character survives.
"""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from resnet_serve.api.pipeline.uploads import Upload
from resnet_serve.shared.errors import InvalidArchive, PayloadTooLarge, TooManyFiles

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_files: int
    max_file_bytes: int
    max_total_bytes: int


def is_zip(data: bytes) -> bool:
    return data.startswith(ZIP_SIGNATURES)


def declared_size(data: bytes) -> int:
    """What the archive's files say they inflate to (its central directory). Inflating
    never yields more: zipfile reads each member up to its declared size and checks its
    CRC, so a member that lies fails instead."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return sum(info.file_size for info in archive.infolist() if _is_file(info))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise InvalidArchive(f"the upload is not a readable zip archive: {exc}") from None


def read_zip(data: bytes, limits: ArchiveLimits) -> list[Upload]:
    """Every regular file in the archive, in archive order. Raises InvalidArchive,
    TooManyFiles or PayloadTooLarge."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise InvalidArchive(f"the upload is not a readable zip archive: {exc}") from None
    with archive:
        entries = [info for info in archive.infolist() if _is_file(info)]
        if len(entries) > limits.max_files:
            raise TooManyFiles(
                f"the archive holds {len(entries)} files; at most {limits.max_files} per job"
            )
        if not entries:
            raise InvalidArchive("the archive holds no files")
        uploads: list[Upload] = []
        total = 0
        for index, info in enumerate(entries):
            _check_size(info.file_size, info.filename, total, limits)  # before inflating
            budget = min(limits.max_file_bytes, limits.max_total_bytes - total)
            content = _inflate(archive, info, budget)
            _check_size(len(content), info.filename, total, limits)  # declared sizes may lie
            total += len(content)
            uploads.append(Upload(safe_name(info.filename, index), content))
        return uploads


def _check_size(size: int, name: str, total: int, limits: ArchiveLimits) -> None:
    if size > limits.max_file_bytes:
        raise PayloadTooLarge(f"{name!r} is larger than {limits.max_file_bytes} bytes")
    if total + size > limits.max_total_bytes:
        raise PayloadTooLarge(
            f"the archive's files add up to more than {limits.max_total_bytes} bytes"
        )


def _is_file(info: zipfile.ZipInfo) -> bool:
    if info.is_dir() or info.filename.startswith("__MACOSX/"):
        return False
    # The Unix file type, when the archiver recorded one: symlinks, devices... are skipped.
    return stat.S_IFMT(info.external_attr >> 16) in (0, stat.S_IFREG)


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """At most `budget + 1` bytes of the entry: enough to tell it is over the budget."""
    try:
        with archive.open(info) as stream:
            return stream.read(budget + 1)
    # Damaged data, a bad CRC, an encrypted entry, an unsupported compression method.
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        raise InvalidArchive(f"{info.filename!r} cannot be read: {exc}") from None


def safe_name(name: str, index: int) -> str:
    """The entry's path as a label: forward slashes, no root, no '.' or '..' parts."""
    parts = PurePosixPath(_UNPRINTABLE.sub("", name).replace("\\", "/")).parts
    kept = [p for p in parts if p not in ("/", ".", "..") and not p.endswith(":")]
    return "/".join(kept)[-_MAX_NAME_CHARS:] or f"file{index}"

"""resnet_serve.api.bulk.archive: zip uploads for bulk jobs, against hostile archives built here."""

from __future__ import annotations

import io
import stat
import struct
import time
import zipfile

import pytest

from resnet_serve.api.bulk.archive import ArchiveLimits, read_zip, safe_name
from resnet_serve.shared.errors import InvalidArchive, PayloadTooLarge, TooManyFiles

LIMITS = ArchiveLimits(max_files=4, max_file_bytes=1000, max_total_bytes=2500)


def archive(*entries: tuple[str | zipfile.ZipInfo, bytes], deflate: bool = True) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def with_mode(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def test_files_in_order_with_directories_symlinks_and_macos_metadata_skipped() -> None:
    data = archive(
        ("a.png", b"A" * 10),
        ("photos/", b""),
        ("photos/b.jpg", b"B" * 20),
        (with_mode("link.png", stat.S_IFLNK | 0o777), b"/etc/passwd"),
        (with_mode("fifo", stat.S_IFIFO | 0o644), b""),
        ("__MACOSX/._a.png", b"resource fork"),
        (with_mode("c.png", stat.S_IFREG | 0o644), b"C"),
    )
    uploads = read_zip(data, LIMITS)
    assert [(u.filename, u.data) for u in uploads] == [
        ("a.png", b"A" * 10),
        ("photos/b.jpg", b"B" * 20),
        ("c.png", b"C"),
    ]


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("../../etc/passwd", "etc/passwd"),
        ("/abs/x.png", "abs/x.png"),
        ("a/./b/../c.png", "a/b/c.png"),
        ("C:\\Windows\\evil.png", "Windows/evil.png"),
        ("new\nline\x00.png", "newline.png"),
        ("..", "file0"),
    ],
)
def test_names_are_labels_without_path_tricks(name: str, label: str) -> None:
    assert safe_name(name, 0) == label


def test_traversal_names_come_back_as_plain_labels() -> None:
    uploads = read_zip(archive(("../../x.png", b"x"), ("/root/y.png", b"y")), LIMITS)
    assert [u.filename for u in uploads] == ["x.png", "root/y.png"]


def test_too_many_files() -> None:
    data = archive(*[(f"{i}.png", b"x") for i in range(5)])
    with pytest.raises(TooManyFiles, match="5 files"):
        read_zip(data, LIMITS)


def test_directories_do_not_count_towards_the_file_limit() -> None:
    data = archive(*[(f"d{i}/", b"") for i in range(10)], *[(f"{i}.png", b"x") for i in range(4)])
    assert len(read_zip(data, LIMITS)) == 4


def test_a_bomb_entry_is_refused_before_it_is_inflated() -> None:
    bomb = archive(("zeros.png", b"\0" * 50_000_000))
    assert len(bomb) < 100_000
    start = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="larger than 1000 bytes"):
        read_zip(bomb, LIMITS)
    assert time.perf_counter() - start < 0.05  # declared size: nothing inflated


def test_an_entry_that_lies_about_its_size_is_not_inflated_past_the_limit() -> None:
    """The central directory claims 10 bytes for 5 MB of zeros: reading stops at the
    claim and the CRC check catches the lie."""
    data = bytearray(archive(("liar.png", b"\0" * 5_000_000)))
    central = data.rindex(b"PK\x01\x02")  # central directory entry: sizes at +20, +24
    struct.pack_into("<I", data, central + 24, 10)
    struct.pack_into("<I", data, 22, 10)  # the local header's uncompressed size
    with pytest.raises(InvalidArchive, match=r"liar\.png"):
        read_zip(bytes(data), LIMITS)


def test_the_total_is_limited_across_entries() -> None:
    data = archive(*[(f"{i}.png", b"x" * 900) for i in range(3)])  # 2700 > 2500
    with pytest.raises(PayloadTooLarge, match="add up to more than 2500"):
        read_zip(data, LIMITS)


def test_an_encrypted_entry_is_an_invalid_archive() -> None:
    data = bytearray(archive(("secret.png", b"x"), deflate=False))
    # Set the "encrypted" flag (bit 0) in the local and the central header: no password
    # can be given here, so the entry cannot be read.
    struct.pack_into("<H", data, 6, 0x1)
    struct.pack_into("<H", data, data.rindex(b"PK\x01\x02") + 8, 0x1)
    with pytest.raises(InvalidArchive, match=r"secret\.png"):
        read_zip(bytes(data), LIMITS)


def test_damaged_data_is_an_invalid_archive() -> None:
    data = bytearray(archive(("a.png", b"payload" * 50)))
    data[40:60] = b"\xff" * 20  # inside the deflate stream of the only entry
    with pytest.raises(InvalidArchive):
        read_zip(bytes(data), LIMITS)


@pytest.mark.parametrize("data", [b"not a zip at all", b"PK\x03\x04truncated", b""])
def test_not_a_zip(data: bytes) -> None:
    with pytest.raises(InvalidArchive, match="not a readable zip"):
        read_zip(data, LIMITS)


def test_an_archive_without_files() -> None:
    with pytest.raises(InvalidArchive, match="no files"):
        read_zip(archive(("empty/", b"")), LIMITS)

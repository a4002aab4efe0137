"""resnet_serve.shared.preprocess: torchvision parity, Pillow modes, JPEG draft, hostile bytes.

The reference is torchvision's own `Compose([Resize(256), CenterCrop(224)])` on PIL RGB
images, the recipe the model was trained with; the gateway must match it without torch.
"""

from __future__ import annotations

import functools
import io
import struct
import time
import zipfile
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageFile
from torchvision import transforms

from resnet_serve.shared.errors import (
    CorruptImage,
    EmptyBody,
    NotAnImage,
    ServeError,
    TooManyPixels,
)
from resnet_serve.shared.preprocess import PreprocessConfig, preprocess, resize_center_crop, to_rgb
from tests.images import PHOTOS, encode, photo

FULL = PreprocessConfig(jpeg_draft=False)
DRAFT = PreprocessConfig(jpeg_draft=True)
REFERENCE = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])


def reference(image: Image.Image) -> np.ndarray:
    return np.asarray(REFERENCE(image.convert("RGB")), dtype=np.uint8)


def diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def assert_crop(out: np.ndarray) -> None:
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous


def png_chunk(kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def rgb_png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG built by hand: 8-bit RGB, IHDR declaring `width` x `height`, one IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@functools.cache
def bomb(side: int) -> bytes:
    """A real, valid all-black `side` x `side` PNG: hundreds of MB of pixels in a few
    hundred KB (deflate compresses zeros about 1000:1)."""
    compressor = zlib.compressobj(9)
    rows = bytes(1 + 3 * side) * 100  # filter byte + RGB, 100 rows at a time
    stream = [compressor.compress(rows) for _ in range(side // 100)]
    return rgb_png(side, side, b"".join([*stream, compressor.flush()]))


# ---------------------------------------------------------------------------------------
# Parity with torchvision


SHAPES = {
    "landscape-640x480": (640, 480),
    "portrait-480x640": (480, 640),
    "tall-300x900": (300, 900),
    "wide-1200x200": (1200, 200),
    "odd-257x1001": (257, 1001),
    # Resized to 343x256: the crop offset is round(59.5) = 60, where flooring gives 59.
    "half-pixel-offset-686x512": (686, 512),
    "half-pixel-offset-512x686": (512, 686),
    "exact-256x256": (256, 256),
    "already-224x224": (224, 224),
    "tiny-30x20-upscaled": (30, 20),
}


def check_parity(source: Image.Image) -> None:
    expected = reference(source)
    through_png = preprocess(encode(source, "PNG"), FULL)
    direct = resize_center_crop(source, 256, 224)
    for out in (through_png, direct):
        assert_crop(out)
        assert diff(out, expected).max() <= 1


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", PHOTOS)
def test_matches_torchvision(name: str, shape: tuple[int, int]) -> None:
    check_parity(photo(name).resize(shape, Image.Resampling.BICUBIC))


# The reference resizes a 1x5000 strip to 256x1,280,000 (about 1.3 GB, seconds), so strips
# run on one photo only. The service resamples only the crop's source rows: cheap for it.
@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1)], ids=["strip-1x5000", "strip-5000x1"])
def test_matches_torchvision_on_strips(shape: tuple[int, int]) -> None:
    check_parity(photo("astronaut").resize(shape, Image.Resampling.BICUBIC))


def test_other_sizes_match_torchvision() -> None:
    """The sizes come from the model's manifest, not constants."""
    source = photo("coffee")
    expected = np.asarray(
        transforms.Compose([transforms.Resize(342), transforms.CenterCrop(299)])(source)
    )
    out = preprocess(encode(source, "PNG"), PreprocessConfig(342, 299, jpeg_draft=False))
    assert out.shape == (299, 299, 3)
    assert diff(out, expected).max() <= 1


# ---------------------------------------------------------------------------------------
# Every mode becomes RGB uint8

RAMP16 = np.linspace(0, 65535, 200 * 300).reshape(200, 300).astype(np.uint16)


def from_8bit(array: np.ndarray) -> np.ndarray:
    return reference(Image.fromarray(array.astype(np.uint8), mode="L"))


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255
    return np.rint(rgb * a + 255 * (1 - a)).astype(np.uint8)


def case_l() -> tuple[Image.Image, np.ndarray]:
    grey = photo("camera").convert("L")
    return grey, reference(grey)


def case_la() -> tuple[Image.Image, np.ndarray]:
    grey = np.asarray(photo("camera").convert("L"))
    alpha = np.linspace(0, 255, grey.size).reshape(grey.shape).astype(np.uint8)
    image = Image.fromarray(np.dstack([grey, alpha]), mode="LA")
    composite = over_white(np.dstack([grey] * 3), alpha)
    return image, reference(Image.fromarray(composite))


def case_p() -> tuple[Image.Image, np.ndarray]:
    palette = photo("coffee").quantize(64)
    return palette, reference(palette.convert("RGB"))


def case_rgba() -> tuple[Image.Image, np.ndarray]:
    rgb = np.asarray(photo("chelsea"))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    image = Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")
    return image, reference(Image.fromarray(over_white(rgb, alpha)))


def case_cmyk() -> tuple[Image.Image, np.ndarray]:
    cmyk = photo("astronaut").convert("CMYK")
    return cmyk, reference(cmyk.convert("RGB"))


def case_i16() -> tuple[Image.Image, np.ndarray]:
    return Image.fromarray(RAMP16), from_8bit(np.rint(RAMP16 / 257))


def case_i32() -> tuple[Image.Image, np.ndarray]:
    return Image.fromarray(RAMP16.astype(np.int32)), from_8bit(np.rint(RAMP16 / 257))


def case_f() -> tuple[Image.Image, np.ndarray]:
    values = np.linspace(-50.0, 300.0, 200 * 300).reshape(200, 300).astype(np.float32)
    return Image.fromarray(values), from_8bit(np.clip(np.rint(values), 0, 255))


def case_1() -> tuple[Image.Image, np.ndarray]:
    bilevel = photo("camera").convert("1")
    return bilevel, reference(bilevel.convert("RGB"))


# (mode, build, a format that stores the mode losslessly)
MODES: list[tuple[str, Callable[[], tuple[Image.Image, np.ndarray]], str]] = [
    ("L", case_l, "PNG"),
    ("LA", case_la, "PNG"),
    ("P", case_p, "PNG"),
    ("RGBA", case_rgba, "PNG"),
    ("CMYK", case_cmyk, "TIFF"),
    ("I;16", case_i16, "PNG"),
    ("I", case_i32, "TIFF"),
    ("F", case_f, "TIFF"),
    ("1", case_1, "PNG"),
]


@pytest.mark.parametrize(("mode", "build", "fmt"), MODES, ids=[m[0] for m in MODES])
def test_every_mode_becomes_rgb(
    mode: str, build: Callable[[], tuple[Image.Image, np.ndarray]], fmt: str
) -> None:
    image, expected = build()
    data = encode(image, fmt)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode == mode, "the encoded file must really carry the mode under test"
    out = preprocess(data, FULL)
    assert_crop(out)
    assert diff(out, expected).max() <= 1
    assert diff(resize_center_crop(to_rgb(image), 256, 224), expected).max() <= 1


@pytest.mark.parametrize(
    ("value", "narrow"), [(0, 0), (257, 1), (32896, 128), (65300, 254), (65535, 255)]
)
def test_sixteen_bit_scales_by_257(value: int, narrow: int) -> None:
    """Not a clip to 255 (Pillow's I;16 -> L) and not `>> 8` (65300 >> 8 == 255)."""
    data = encode(Image.fromarray(np.full((40, 60), value, dtype=np.uint16)), "PNG")
    assert (preprocess(data, FULL) == narrow).all()


def test_fully_transparent_rgba_is_white() -> None:
    rgb = np.asarray(photo("rocket"))
    clear = Image.fromarray(np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)]), mode="RGBA")
    assert (preprocess(encode(clear, "PNG"), FULL) == 255).all()


def test_palette_transparency_is_white() -> None:
    """Index 0 (red) is transparent: the left half turns white, the right half stays blue."""
    indices = np.zeros((200, 300), dtype=np.uint8)
    indices[:, 150:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    data = encode(image, "PNG", transparency=0)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode == "P"
        assert stored.info["transparency"] == 0
    out = preprocess(data, FULL)
    assert (out[:, :90] == 255).all()
    assert (out[:, -90:] == (0, 0, 255)).all()


def test_cmyk_jpeg_keeps_its_colours() -> None:
    """Adobe CMYK JPEGs store inverted ink; the crop must be the photo, not its negative."""
    source = photo("astronaut")
    data = encode(source.convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode == "CMYK"
    assert diff(preprocess(data, FULL), reference(source)).mean() < 4


TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", TRANSPOSES, ids=[f"orientation-{o}" for o in TRANSPOSES])
@pytest.mark.parametrize("draft", [False, True], ids=["full", "draft"])
def test_exif_orientation_is_applied(orientation: int, draft: bool) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    source = photo("chelsea").resize((1200, 800), Image.Resampling.BICUBIC)  # non-square
    data = encode(source, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as stored:  # the stored pixels, not yet oriented
        pixels = stored.convert("RGB")
    upright = reference(pixels.transpose(TRANSPOSES[orientation]))
    out = preprocess(data, PreprocessConfig(jpeg_draft=draft))
    if draft:  # a DCT-domain downscale: close to, not equal to, the full decode
        assert diff(out, upright).mean() < 1.5
    else:
        assert diff(out, upright).max() <= 1
    assert diff(out, reference(pixels)).mean() > 10, "orientation must change the crop"


def test_animated_gif_uses_the_first_frame() -> None:
    size = (400, 300)
    frames = [photo(name).resize(size) for name in ("chelsea", "coffee", "rocket")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.n_frames == 3
        decoded = []
        for index in range(3):
            stored.seek(index)
            decoded.append(reference(stored.convert("RGB")))
    out = preprocess(data, FULL)
    assert diff(out, decoded[0]).max() <= 1
    assert diff(out, decoded[1]).mean() > 10
    assert diff(out, decoded[2]).mean() > 10


# ---------------------------------------------------------------------------------------
# JPEG draft mode


@pytest.mark.parametrize("size", [(3000, 2000), (2000, 3000)], ids=["3000x2000", "2000x3000"])
@pytest.mark.parametrize("name", PHOTOS)
def test_jpeg_draft_stays_close_to_full_decode(
    name: str, size: tuple[int, int], record_property: Callable[[str, object], None]
) -> None:
    data = encode(photo(name).resize(size, Image.Resampling.BICUBIC), "JPEG", quality=90)
    full, draft = preprocess(data, FULL), preprocess(data, DRAFT)
    assert_crop(draft)
    mean = float(diff(full, draft).mean())
    record_property("draft_mean_abs_diff", round(mean, 3))  # in --junitxml reports
    # Measured 0.22-0.43 grey levels on these photos; 0 would mean draft never ran.
    assert 0 < mean < 1.5, f"{name} {size}: draft vs full mean abs diff {mean:.3f}"


@pytest.mark.parametrize("size", [(640, 480), (511, 900)], ids=["640x480", "511x900"])
def test_jpeg_draft_skips_images_it_would_shrink_below_the_resize(size: tuple[int, int]) -> None:
    """Below a short side of 2 x 256, a 1/2 scale decode would drop under 256: no draft."""
    data = encode(photo("coffee").resize(size), "JPEG", quality=90)
    assert (preprocess(data, DRAFT) == preprocess(data, FULL)).all()


class CountingDecoder:
    """A Pillow decoder that counts its `decode` calls (each is one GIL release)."""

    calls = 0

    def __init__(self, decoder: object) -> None:
        self._decoder = decoder

    def decode(self, buffer: bytes) -> tuple[int, int]:
        CountingDecoder.calls += 1
        result: tuple[int, int] = self._decoder.decode(buffer)  # type: ignore[attr-defined]
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self._decoder, name)


@pytest.mark.parametrize("config", [FULL, DRAFT], ids=["full", "draft"])
def test_a_camera_jpeg_is_decoded_in_one_call(
    monkeypatch: pytest.MonkeyPatch, config: PreprocessConfig
) -> None:
    """Pillow takes the GIL back between decoder calls, and feeds 64 KiB a call by
    default: a 1 MB upload would wait ~15 times for the event loop and the other decode
    threads. The bytes are in memory, so the decoder gets them all at once."""
    data = encode(photo("coffee").resize((3000, 2000)), "JPEG", quality=95)
    assert len(data) > 15 * ImageFile.MAXBLOCK  # 16 calls at Pillow's default
    get_decoder = Image._getdecoder
    monkeypatch.setattr(Image, "_getdecoder", lambda *args: CountingDecoder(get_decoder(*args)))
    CountingDecoder.calls = 0
    assert_crop(preprocess(data, config))
    assert CountingDecoder.calls == 1


# ---------------------------------------------------------------------------------------
# Hostile bytes


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.jpg", b"not really")
    return buffer.getvalue()


def flipped(data: bytes, start: int, count: int) -> bytes:
    damaged = bytearray(data)
    for i in range(start, start + count):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def good_jpeg() -> bytes:
    return encode(photo("chelsea"), "JPEG", quality=90)


def good_png() -> bytes:
    return encode(photo("chelsea"), "PNG")


def good_gif() -> bytes:
    return encode(photo("chelsea"), "GIF")


GIF_SCREEN = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)

NOT_IMAGES: dict[str, Callable[[], bytes]] = {
    "text": lambda: b"hello, this is a text file\n" * 20,
    "html": lambda: b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
    "json": lambda: b'{"image": "base64?"}',
    "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    "pdf": lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
    "eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "zip": zip_file,
    "random": lambda: np.random.default_rng(7).bytes(4096),
    "jpeg-soi-only-2-bytes": lambda: b"\xff\xd8",
}

CORRUPT: dict[str, Callable[[], bytes]] = {
    "jpeg-truncated-half": lambda: good_jpeg()[: len(good_jpeg()) // 2],
    "jpeg-truncated-header": lambda: good_jpeg()[:100],
    "jpeg-markers-only": lambda: b"\xff\xd8\xff\xd9",
    "jpeg-middle-bytes-flipped": lambda: flipped(good_jpeg(), len(good_jpeg()) // 2, 200),
    "png-truncated-half": lambda: good_png()[: len(good_png()) // 2],
    "png-truncated-header": lambda: good_png()[:30],
    "png-bad-ihdr-crc": lambda: flipped(good_png(), 29, 1),
    "png-zero-width": lambda: rgb_png(0, 10, zlib.compress(bytes(11))),
    "png-idat-not-zlib": lambda: rgb_png(10, 10, b"garbage!"),
    "png-idat-too-short": lambda: rgb_png(10, 10, zlib.compress(bytes(20))),
    "gif-zero-frames": lambda: GIF_SCREEN + b";",
    "gif-garbage-frame": lambda: (
        GIF_SCREEN + b"," + bytes(4) + b"\x0a\x00\x0a\x00\x00\x08\x05garba\x00;"
    ),
    "gif-truncated": lambda: good_gif()[:5000],
    "webp-garbage": lambda: b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(20),
    "tiff-garbage": lambda: b"II*\x00" + b"\xff" * 40,
}


def test_empty_bytes() -> None:
    with pytest.raises(EmptyBody):
        preprocess(b"", FULL)


@pytest.mark.parametrize("build", NOT_IMAGES.values(), ids=NOT_IMAGES.keys())
def test_not_an_image(build: Callable[[], bytes]) -> None:
    with pytest.raises(NotAnImage):
        preprocess(build(), FULL)


@pytest.mark.parametrize("build", CORRUPT.values(), ids=CORRUPT.keys())
@pytest.mark.parametrize("config", [FULL, DRAFT], ids=["full", "draft"])
def test_corrupt_image(build: Callable[[], bytes], config: PreprocessConfig) -> None:
    with pytest.raises(CorruptImage):
        preprocess(build(), config)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image whose pixels get decoded (ImageFile.load) during a test."""
    calls: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> object:
        calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


DECLARED = [
    # 400 Mpx: also past twice Pillow's own MAX_IMAGE_PIXELS (DecompressionBombError).
    pytest.param(lambda: rgb_png(20000, 20000, zlib.compress(bytes(64))), id="header-20000x20000"),
    # 64 Mpx: under Pillow's limit, so only the service's max_pixels stops it.
    pytest.param(lambda: rgb_png(8000, 8000, zlib.compress(bytes(64))), id="header-8000x8000"),
    pytest.param(lambda: bomb(8000), id="bomb-8000x8000"),
    # 144 Mpx: Pillow warns (DecompressionBombWarning) and pytest makes warnings errors;
    # in production the warning is only logged, so run it both ways.
    pytest.param(lambda: bomb(12000), id="bomb-12000x12000-warning-is-error"),
    pytest.param(
        lambda: bomb(12000),
        id="bomb-12000x12000-warning-ignored",
        marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    ),
]


@pytest.mark.parametrize("build", DECLARED)
def test_too_many_pixels_is_refused_before_decoding(
    build: Callable[[], bytes], decodes: list[tuple[int, int]]
) -> None:
    data = build()
    assert len(data) < 1_000_000
    start = time.perf_counter()
    with pytest.raises(TooManyPixels):
        preprocess(data, FULL)
    assert time.perf_counter() - start < 0.5
    assert decodes == []


def test_bomb_is_a_real_image() -> None:
    """The bomb is not just a lying header: its stream inflates to every row of pixels."""
    data = bomb(8000)  # signature (8), IHDR chunk (25), IDAT length (4) and type (4), data
    width, height = struct.unpack(">II", data[16:24])
    idat_length = struct.unpack(">I", data[33:37])[0]
    inflater, pending, inflated = zlib.decompressobj(), data[41 : 41 + idat_length], 0
    while pending:
        inflated += len(inflater.decompress(pending, 1 << 24))
        pending = inflater.unconsumed_tail
    assert (width, height) == (8000, 8000)
    assert inflated == height * (1 + 3 * width)
    assert inflater.eof


@pytest.mark.parametrize(("limit", "refused"), [(451 * 300, False), (451 * 300 - 1, True)])
def test_max_pixels_is_the_boundary(limit: int, refused: bool) -> None:
    data = good_png()  # chelsea: 451 x 300
    config = PreprocessConfig(max_pixels=limit, jpeg_draft=False)
    if refused:
        with pytest.raises(TooManyPixels, match="451x300"):
            preprocess(data, config)
    else:
        assert_crop(preprocess(data, config))


@pytest.mark.parametrize(
    ("build", "seed"), [(good_jpeg, 1), (good_png, 2), (good_gif, 3)], ids=["jpeg", "png", "gif"]
)
def test_damaged_files_only_raise_service_errors(build: Callable[[], bytes], seed: int) -> None:
    """Deterministic fuzz: 40 copies, each with 16 bytes overwritten at random places."""
    data = build()
    rng = np.random.default_rng(seed)
    outcomes = set()
    for _ in range(40):
        damaged = bytearray(data)
        for at in rng.integers(0, len(data), 16):
            damaged[at] = int(rng.integers(0, 256))
        try:
            assert_crop(preprocess(bytes(damaged), DRAFT))
            outcomes.add("decoded")
        except ServeError as exc:  # anything else escapes and fails the test
            outcomes.add(exc.code)
    assert "corrupt_image" in outcomes
    assert outcomes <= {"decoded", "corrupt_image", "not_an_image", "too_many_pixels"}

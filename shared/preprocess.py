"""Upload bytes -> uint8 224x224x3: the torchvision `Resize(256) + CenterCrop(224)` recipe.

Pillow + NumPy only, so gateways never need torch. Image headers are checked against
the pixel limit before any pixel is decoded, and large JPEGs are decoded in draft mode
(DCT-domain downscaling) straight to about the size the resize needs.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from resnet_serve.shared.errors import CorruptImage, EmptyBody, NotAnImage, TooManyPixels

if TYPE_CHECKING:
    from resnet_serve.shared.jobs import ModelInfo
    from resnet_serve.shared.settings import Settings

log = logging.getLogger(__name__)

# Formats Pillow may try. Anything else (EPS/PostScript, PDF, ...) is "not an image" here.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "PPM")
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Magic numbers of supported formats (only unambiguous ones: BMP's "BM" also starts text).
# Bytes that begin like one of these but that Pillow cannot open are a damaged image
# (422 corrupt_image), not a file of the wrong type (415 not_an_image).
_ORIENTATION = 0x0112
# Peak bytes per pixel while decoding, by mode (raw pixels + conversion copies + slack).
_PEAK_BYTES_PER_PIXEL = {
    "1": 5,
    "L": 7,
    "P": 7,
    "RGB": 6,
    "YCbCr": 8,
    "CMYK": 10,
    "LAB": 8,
    "HSV": 8,
    "RGBA": 22,
    "RGBa": 22,
    "LA": 22,
    "La": 22,
    "PA": 22,
    "RGBX": 10,
    "I;16": 18,
    "I;16B": 18,
    "I;16L": 18,
    "I;16N": 18,
    "I": 20,
    "F": 20,
}
_DEFAULT_PEAK_BYTES_PER_PIXEL = 22
_FIXED_BYTES = 256 * 1024  # decoder state, the crop, Python objects
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True, slots=True)
class PreprocessConfig:
    resize_size: int = 256
    crop_size: int = 224
    max_pixels: int = 40_000_000
    jpeg_draft: bool = True


def config_for(info: ModelInfo, settings: Settings) -> PreprocessConfig:
    """The one place a model's preprocessing comes from: its recipe plus the upload limits."""
    return PreprocessConfig(
        resize_size=info.resize_size,
        crop_size=info.input_size,
        max_pixels=settings.max_image_pixels,
        jpeg_draft=settings.jpeg_draft,
    )


def preprocess(data: bytes, config: PreprocessConfig) -> np.ndarray:
    """Decode `data` and return the centre crop as a contiguous uint8 HWC array.

    Raises EmptyBody, NotAnImage, TooManyPixels or CorruptImage; never anything else
    for bad bytes.
    """
    return finish(open_image(data, config), config)


def open_image(data: bytes, config: PreprocessConfig) -> ImageFile.ImageFile:
    """The image with only its header read (and a JPEG's draft scale chosen): its size
    and mode tell what decoding it will cost before a pixel is decoded."""
    if not data:
        raise EmptyBody("the image is empty")
    image = _open(data, config.max_pixels)
    # Pillow feeds its decoder 64 KiB at a time and takes the GIL back between blocks: a
    # 1 MB camera JPEG then waits 16 times for the event loop and the other decode threads.
    # The bytes are in memory already: one block, one decoder call, one GIL release.
    image.decodermaxblock = max(len(data), image.decodermaxblock)
    if config.jpeg_draft and image.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG
        _draft(image, config.resize_size)
    return image


def working_set_bytes(image: ImageFile.ImageFile) -> int:
    """Peak bytes `finish` holds for this image: the decoded pixels and every copy the
    mode conversion, EXIF rotation and compositing make (measured per mode with
    Pillow 13: 40 MP RGBA peaks near 21 bytes a pixel), and the block of encoded bytes
    the decoder reads (the whole file: `open_image`)."""
    width, height = image.size
    per_pixel = _PEAK_BYTES_PER_PIXEL.get(image.mode, _DEFAULT_PEAK_BYTES_PER_PIXEL)
    if image.mode == "P" and "transparency" in image.info:
        per_pixel = _PEAK_BYTES_PER_PIXEL["RGBA"]
    if _rotated(image):
        per_pixel += 4  # exif_transpose makes one more full copy
    return width * height * per_pixel + image.decodermaxblock + _FIXED_BYTES


def _rotated(image: ImageFile.ImageFile) -> bool:
    """Whether EXIF asks for a rotation, from what the header already told: Pillow's
    `getexif` on a PNG decodes every pixel looking for a late eXIf chunk."""
    if image.format not in ("JPEG", "MPO", "TIFF", "WEBP") and "exif" not in image.info:
        return False
    return image.getexif().get(_ORIENTATION, 1) not in (None, 1)


def finish(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """Decode an `open_image` result to the centre crop; closes the image."""
    with image:
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            return resize_center_crop(to_rgb(oriented), config.resize_size, config.crop_size)
        # Pillow's decoders raise an open set of exception types on hostile data.
        except Exception as exc:
            log.debug("image decode failed: %r", exc)
            raise CorruptImage(f"the image could not be decoded: {exc}") from exc


def _open(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(f"the image has too many pixels (limit {max_pixels})") from exc
    except UnidentifiedImageError as exc:
        if _looks_like_image(data):
            raise CorruptImage("the image is damaged: its header could not be read") from exc
        raise NotAnImage("the upload is not an image in a supported format") from exc
    except Exception as exc:
        raise CorruptImage(f"the image header could not be read: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise CorruptImage("the image has no pixels")
    if width * height > max_pixels:
        image.close()
        raise TooManyPixels(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return image


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _draft(image: Image.Image, resize_size: int) -> None:
    """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that keeps the short side >= resize."""
    width, height = image.size
    short = min(width, height)
    if short >= 2 * resize_size:
        scale = short / resize_size
        image.draft(None, (int(width / scale) + 1, int(height / scale) + 1))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        narrow = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(narrow, mode="L").convert("RGB")
    if mode == "F":
        narrow = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(narrow, mode="L").convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, resize_size: int, crop_size: int) -> np.ndarray:
    """Exactly `Resize(resize_size)` then `CenterCrop(crop_size)` as torchvision does on PIL.

    Only the crop's source region is resampled (Pillow's `box`), with the same sample
    positions and filter support as the full resize, so a 1x10000 strip costs no more
    than a square.
    """
    width, height = image.size
    if width <= height:
        new_w, new_h = resize_size, int(resize_size * height / width)
    else:
        new_w, new_h = int(resize_size * width / height), resize_size
    if new_w < crop_size or new_h < crop_size:
        raise ValueError("resize_size must be at least crop_size")
    top = round((new_h - crop_size) / 2.0)
    left = round((new_w - crop_size) / 2.0)
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + crop_size) * sx, (top + crop_size) * sy)
    cropped = image.resize((crop_size, crop_size), Image.Resampling.BILINEAR, box=box)
    return np.ascontiguousarray(np.asarray(cropped, dtype=np.uint8))

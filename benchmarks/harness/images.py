"""Benchmark image sets made from scikit-image photos, as JPEG bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

from tests.images import encode, photo

PHOTOS = (
    "chelsea",
    "coffee",
    "rocket",
    "astronaut",
    "cat",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
)


@dataclass(frozen=True)
class ImageSet:
    key: str
    title: str
    images: list[bytes]

    @property
    def mean_kib(self) -> float:
        return sum(len(b) for b in self.images) / len(self.images) / 1024


def _random_view(
    source: Image.Image, aspect: float, min_share: float, rng: np.random.Generator
) -> Image.Image:
    """A random crop of `source` with width/height `aspect`, covering >= min_share of it."""
    w, h = source.size
    max_w = min(w, int(h * aspect))
    crop_w = int(rng.uniform(min_share, 1.0) * max_w)
    crop_h = int(crop_w / aspect)
    x = int(rng.integers(0, w - crop_w + 1))
    y = int(rng.integers(0, h - crop_h + 1))
    view = source.crop((x, y, x + crop_w, y + crop_h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return view


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.7, 1.3)))
    return image


def _jpeg(image: Image.Image) -> bytes:
    return encode(image, "JPEG", quality=90)


def imagenet_sized(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct ~500x375 JPEGs (landscape and portrait), quality 90."""
    rng = np.random.default_rng(seed)
    photos = [photo(name) for name in PHOTOS]
    out = []
    for i in range(count):
        landscape = i % 4 != 3
        size = (500, 375) if landscape else (375, 500)
        view = _random_view(photos[i % len(photos)], size[0] / size[1], 0.5, rng)
        view = _jitter(view.resize(size, Image.Resampling.BICUBIC), rng)
        out.append(_jpeg(view))
    return _distinct(out)


def camera_sized(count: int, seed: int = 1) -> list[bytes]:
    """`count` distinct 3000x2000 JPEGs: upscaled photos plus noise (so they compress
    like camera output, not like smooth upscales), quality 90."""
    rng = np.random.default_rng(seed)
    photos = [photo(name) for name in PHOTOS]
    out = []
    for i in range(count):
        view = _random_view(photos[i % len(photos)], 1.5, 0.6, rng)
        view = _jitter(view.resize((3000, 2000), Image.Resampling.BICUBIC), rng)
        pixels = np.asarray(view, dtype=np.int16)
        noise = rng.normal(0.0, 4.0, size=pixels.shape).astype(np.int16)
        noisy = np.clip(pixels + noise, 0, 255).astype(np.uint8)
        out.append(_jpeg(Image.fromarray(noisy)))
    return _distinct(out)


def _distinct(images: list[bytes]) -> list[bytes]:
    if len(set(images)) != len(images):
        raise RuntimeError("generated images are not all distinct")
    return images

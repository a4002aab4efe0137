"""Real photos (scikit-image) and generated images, as encoded bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "camera", "cat", "hubble_deep_field")


def photo(name: str) -> Image.Image:
    array = getattr(data, name)()
    return Image.fromarray(array).convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(name: str, quality: int = 92) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)


def crops(count: int, size: int = 224, seed: int = 0) -> list[Image.Image]:
    """`count` different views of the real photos: random crops, scales and flips."""
    rng = np.random.default_rng(seed)
    sources = [photo(name) for name in PHOTOS]
    views = []
    for i in range(count):
        source = sources[i % len(sources)]
        w, h = source.size
        side = int(rng.integers(min(w, h) // 2, min(w, h) + 1))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        view = source.crop((x, y, x + side, y + side))
        view = view.resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        views.append(view)
    return views

"""Calibration images for INT8: crops and flips of real photos, held out by source photo.

The default source is 39 freely licensed natural photos shipped with the package
(`photos/`, each one's author and licence in `photos/SOURCES.md`): the same files on
every install, so a worker without the build tools that re-gates on a new CPU judges
on the photos `export` judged on. A user names their own directory with
`--calibration-dir`; photos in class folders named by their label (`Egyptian cat/`,
`Egyptian_cat/`) or, for the 1,000 ImageNet classes, by WordNet id (`n02124075/`, as
ImageNet's own folders are) are labelled, and the accuracy gate then measures the
top-1 drop instead of estimating it. No torch here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_serve.worker.model.artifacts import BuildError, sha256_file

_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
_MIN_SIDE = 256  # smaller files (icons, test patterns) are not photos


@dataclass(frozen=True, slots=True)
class CalibrationSet:
    """uint8 [N, S, S, 3] crops. `calibration` and `tuning` come from one set of photos,
    `holdout` from the others, so a judged crop never shares a photo with a fitted one."""

    calibration: np.ndarray
    tuning: np.ndarray
    holdout: np.ndarray
    holdout_owner: np.ndarray  # the held-out photo each held-out crop comes from
    holdout_labels: np.ndarray | None  # class index per held-out crop, if labelled
    digest: str
    source: str
    photos: int
    holdout_photos: int


# Freely licensed natural photos shipped with the package (photos/SOURCES.md).
SHIPPED_PHOTOS = Path(__file__).with_name("photos")


def photo_files(directory: Path | None) -> list[Path]:
    candidates = sorted((directory or SHIPPED_PHOTOS).rglob("*"))
    files = [p for p in candidates if p.is_file() and p.suffix.lower() in _SUFFIXES]
    photos = []
    for path in sorted(files, key=lambda p: p.name):
        try:
            with Image.open(path) as image:
                if min(image.size) >= _MIN_SIDE:
                    photos.append(path)
        except OSError:
            continue
    if len(photos) < 4:
        where = directory or f"the shipped photos ({SHIPPED_PHOTOS})"
        raise BuildError(
            f"INT8 calibration needs at least 4 photos of {_MIN_SIDE}px or more in {where}; "
            f"found {len(photos)}"
        )
    return photos


def _views(image: Image.Image, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random square crops (half to all of the short side), resized, half flipped."""
    w, h = image.size
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        side = int(rng.integers(min(w, h) // 2, min(w, h) + 1))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        view = image.crop((x, y, x + side, y + side)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(view)
    return out


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def crop_views(photos: list[Image.Image], total: int, size: int, seed: int) -> np.ndarray:
    """`total` crops, shared evenly among `photos`, in photo order."""
    rng = np.random.default_rng(seed)
    per = _shares(total, len(photos))
    return np.concatenate([_views(p, n, size, rng) for p, n in zip(photos, per, strict=True)])


def crop_owners(photos: int, total: int) -> np.ndarray:
    """The photo index of each crop `crop_views` made."""
    return np.repeat(np.arange(photos), _shares(total, photos))


def _normalised(name: str) -> str:
    return name.replace("_", " ").strip().casefold()


# ImageNet-1k's WordNet ids in class-index order (sorted, as every ImageNet-1k model's
# classes are): the folder names of ImageNet's own train and val sets.
WNIDS_FILE = Path(__file__).with_name("imagenet_wnids.txt")


def photo_labels(files: list[Path], directory: Path, labels: list[str]) -> np.ndarray | None:
    """Class indices from class folders (`<dir>/<label>/<photo>`, or `<dir>/<wnid>/...`
    for a 1,000-class ImageNet model), or None when the photos are not sorted into
    folders. A folder naming no class is an error."""
    if not all(f.parent != directory for f in files):
        return None
    index = {_normalised(label): i for i, label in enumerate(labels)}
    if len(labels) == 1000:
        wnids = WNIDS_FILE.read_text().split()
        index.update({wnid.casefold(): i for i, wnid in enumerate(wnids)})
    unknown = sorted({f.parent.name for f in files if _normalised(f.parent.name) not in index})
    if unknown:
        raise BuildError(
            f"calibration folders that name no class of this model: {', '.join(unknown[:5])} "
            "(name each folder by its label, e.g. 'Egyptian cat', or its ImageNet WordNet "
            "id, e.g. 'n02124075')"
        )
    return np.array([index[_normalised(f.parent.name)] for f in files])


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def split_photos(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(fitted, held out): every third photo is held out, whole, with all its crops."""
    held = files[1::3]
    return [f for f in files if f not in held], held


def load_calibration(
    directory: Path | None,
    *,
    size: int,
    calibration_crops: int,
    holdout_crops: int,
    labels: list[str] | None = None,
    seed: int = 0,
) -> CalibrationSet:
    """Split photos (not crops) into fitted and held-out groups, then crop each group.
    `labels`: the model's class names, to read class folders with."""
    files = photo_files(directory)
    fitted_files, holdout_files = split_photos(files)
    classes = photo_labels(holdout_files, directory, labels) if directory and labels else None
    owner = crop_owners(len(holdout_files), holdout_crops)
    fitted = [_rgb(f) for f in fitted_files]
    held = [_rgb(f) for f in holdout_files]
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    digest.update(f"{size}:{calibration_crops}:{holdout_crops}:{seed}".encode())
    return CalibrationSet(
        calibration=crop_views(fitted, calibration_crops, size, seed),
        tuning=crop_views(fitted, max(calibration_crops, 64), size, seed + 1),
        holdout=crop_views(held, holdout_crops, size, seed + 2),
        holdout_owner=owner,
        holdout_labels=classes[owner] if classes is not None else None,
        digest=digest.hexdigest(),
        source=str(directory) if directory else "shipped photos",
        photos=len(files),
        holdout_photos=len(holdout_files),
    )

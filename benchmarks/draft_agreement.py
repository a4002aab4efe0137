"""What JPEG draft mode does to predictions: top-1 agreement, draft vs full decode.

Large real photos (scikit-image photos and random crops of them, upscaled to camera
sizes and saved as JPEG) are classified by efficientnet_lite0 (real ImageNet weights)
after a full decode and after a draft-mode decode; the script prints the agreement and
the speed-up.

    .venv/bin/python -m benchmarks.draft_agreement [--images 96]   # from the repository root
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_serve.shared.preprocess import PreprocessConfig, preprocess
from resnet_serve.shared.settings import load_settings
from resnet_serve.worker.model.loading import load_model
from tests.images import crops

SIZES = ((3000, 2000), (2000, 3000), (4032, 3024), (1600, 1200))


def large_jpegs(count: int) -> list[bytes]:
    images = []
    for i, view in enumerate(crops(count, size=448, seed=11)):
        width, height = SIZES[i % len(SIZES)]
        buffer = io.BytesIO()
        view.resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def decode_all(images: list[bytes], draft: bool) -> tuple[np.ndarray, float]:
    config = PreprocessConfig(jpeg_draft=draft)
    start = time.perf_counter()
    crops_ = np.stack([preprocess(data, config) for data in images])
    return crops_, (time.perf_counter() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    args = parser.parse_args()
    images = large_jpegs(args.images)
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(
            model="efficientnet_lite0", home_dir=Path(home), offline=True, max_batch=16
        )
        model = load_model(settings)
        full, full_s = decode_all(images, draft=False)
        drafted, draft_s = decode_all(images, draft=True)
        p_full = np.concatenate(
            [model.engine.infer(full[i : i + 16]) for i in range(0, len(full), 16)]
        )
        p_draft = np.concatenate(
            [model.engine.infer(drafted[i : i + 16]) for i in range(0, len(drafted), 16)]
        )
    agree = float((p_full.argmax(1) == p_draft.argmax(1)).mean())
    top5 = np.argsort(-p_full, axis=1)[:, :5]
    in_top5 = float(np.mean([p_draft[i].argmax() in top5[i] for i in range(len(images))]))
    pixel_diff = float(np.abs(full.astype(int) - drafted.astype(int)).mean())
    columns = (
        "images",
        "full decode ms",
        "draft ms",
        "speed-up",
        "top-1 agreement",
        "draft top-1 in full top-5",
        "mean abs pixel diff",
    )
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(images)} | {full_s * 1000:.1f} | {draft_s * 1000:.1f} | {full_s / draft_s:.1f}x "
        f"| {agree:.1%} | {in_top5:.1%} | {pixel_diff:.2f} |"
    )


if __name__ == "__main__":
    main()

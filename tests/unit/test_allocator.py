"""api/limits/malloc.py: a photo's decode reuses heap memory instead of fresh pages.

Run in a child process: the allocator settings are process-wide."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import resource
from resnet_serve.api.limits import malloc
from resnet_serve.shared.preprocess import PreprocessConfig, preprocess
from tests.images import encode, photo

assert malloc.tune_allocator()
data = encode(photo("coffee").resize((3000, 2000)), "JPEG", quality=90)
for _ in range(3):  # the heap grows to its working size
    preprocess(data, PreprocessConfig())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    preprocess(data, PreprocessConfig())
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def test_a_camera_jpeg_decodes_without_fresh_pages() -> None:
    """Its draft decode (750x500, 1.5 MB) stays under the fixed mmap threshold: at 1 MiB
    each decode faulted in ~370 new pages and handed them back (7-8% of the throughput
    on camera-sized uploads)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    faults_per_decode = float(done.stdout)
    assert faults_per_decode < 20, f"{faults_per_decode} page faults per decode"

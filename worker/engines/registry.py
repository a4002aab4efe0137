"""Engines are plug-ins. A distribution names its engines in the entry-point group
`resnet_serve.engines`; each entry point loads an `EnginePlugin`. This one ships
onnxruntime, torchscript and openvino (worker/engines/plugins.py); a test package adds a
fault-injecting engine the product never contains. Only the chosen engine's module, and
so its runtime, is imported."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from resnet_serve.worker.engines.base import Engine
from resnet_serve.worker.engines.streams import Streams

if TYPE_CHECKING:
    from resnet_serve.shared.settings import Settings
    from resnet_serve.worker.model.loading import LoadedModel

GROUP = "resnet_serve.engines"


class EnginePlugin(Protocol):
    name: str  # the `--engine` value
    backend: str  # the artifact backend it opens ("onnx", "openvino", ...); "" for none

    def open(
        self, path: Path, *, precision: str, device: str, threads: int, streams: int = 1
    ) -> Engine:
        """Open an artifact file of `backend`, with `threads` per call. With `streams`
        over 1 (passed only then), `infer` is called from that many threads at once."""

    def load_model(self, settings: Settings) -> LoadedModel:
        """A plug-in with no artifact (`backend` ""): the warm model it serves."""


@cache
def plugins() -> dict[str, EnginePlugin]:
    """Every installed engine plug-in by name. Loading one imports no engine runtime."""
    found = {point.name: point.load() for point in entry_points(group=GROUP)}
    return dict(sorted(found.items()))


def plugin(name: str) -> EnginePlugin:
    try:
        return plugins()[name]
    except KeyError:
        installed = ", ".join(plugins()) or "none"
        raise ValueError(f"no engine {name!r} is installed (installed: {installed})") from None


def serves_without_artifact(engine: str) -> bool:
    """An installed plug-in that builds nothing (e.g. the tests' fault engine)."""
    found = plugins().get(engine)
    return found is not None and not found.backend


def open_engine(
    path: Path, *, backend: str, precision: str, device: str, threads: int, streams: int = 1
) -> Engine:
    """Open `path` with the engine that runs its backend, `threads` per call; with
    `streams` over 1, behind `Streams` (worker/engines/streams.py)."""
    concurrent = {"streams": streams} if streams > 1 else {}
    for candidate in plugins().values():
        if candidate.backend == backend:
            engine = candidate.open(
                path, precision=precision, device=device, threads=threads, **concurrent
            )
            return Streams(engine, streams) if streams > 1 else engine
    raise ValueError(f"no engine for backend {backend!r}")

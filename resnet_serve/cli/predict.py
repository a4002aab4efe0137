"""`resnet-serve predict`: classify image files here, or through a running server."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Protocol

import typer
from rich.console import Console
from rich.table import Table

from resnet_serve.cli.common import (
    EngineOpt,
    Model,
    Repo,
    Weights,
    build_or_exit,
    fail,
    runs_models,
    settings_from,
)
from resnet_serve.shared.logs import configure_logging
from resnet_serve.shared.settings import ENV_PREFIX, Settings

COLUMNS = ("image", "rank", "label", "index", "score")
# The API's default (POST /v1/classify, KServe's classification): one default everywhere.
DEFAULT_TOP_K = 3


def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify")],
    top_k: Annotated[
        int, typer.Option(min=1, max=20, help="Labels per image", show_default=True)
    ] = DEFAULT_TOP_K,
    model: Model = None,
    weights: Weights = None,
    engine: EngineOpt = None,
    model_repository: Repo = None,
    url: Annotated[
        str | None,
        typer.Option(help="Classify through a running server (http://host:port) instead"),
    ] = None,
) -> None:
    """Classify local image files and print a top-k table (on stdout; logs and
    errors go to stderr, and only warnings unless RESNET_SERVE_LOG_LEVEL says more)."""
    missing = [str(path) for path in images if not path.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    settings = settings_from(
        model=model, weights=weights, engine=engine, model_repository=model_repository
    )
    if f"{ENV_PREFIX}LOG_LEVEL" not in os.environ:
        configure_logging("warning", settings.log_format)
    table = Table(title=url)
    for column in COLUMNS:
        table.add_column(column, overflow="fold")  # never cut with "…"
    if url:
        failed = _predict_remote(url, images, top_k, model, table)
    else:
        failed = _predict_local(settings, images, top_k, table)
    Console().print(table)
    if failed:
        raise typer.Exit(1)


def _predict_local(settings: Settings, images: list[Path], top_k: int, table: Table) -> bool:
    if not runs_models():
        fail(
            "this install runs no model (a gateway install): classify through a running "
            "server with `resnet-serve predict --url http://HOST:8000 IMAGE...`, or install "
            "the 'cpu-worker' extra to run one here: pip install 'resnet-serve[cpu-worker]'"
        )
    build_or_exit(settings)
    import numpy as np

    from resnet_serve.shared.errors import ServeError
    from resnet_serve.shared.preprocess import config_for, preprocess
    from resnet_serve.worker.model.loading import load_model
    from resnet_serve.worker.runner import top_k as best

    loaded = load_model(settings.model_copy(update={"max_batch": 1}))
    info = loaded.info
    config = config_for(info, settings)
    table.title = f"{info.name} v{info.version} ({info.engine} {info.precision})"
    failed = False
    for path in images:
        try:
            crop = preprocess(path.read_bytes(), config)
        except (ServeError, OSError) as exc:
            _add_error(table, path, exc)
            failed = True
            continue
        probabilities = loaded.engine.infer(np.expand_dims(crop, 0))[0]
        _add_predictions(table, path, best(probabilities, top_k, loaded.labels))
    loaded.engine.close()
    return failed


def _predict_remote(
    url: str, images: list[Path], top_k: int, model: str | None, table: Table
) -> bool:
    from resnet_serve.client import Client, ServeClientError

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    failed = False
    with Client(url) as client:
        for path in images:
            try:
                result = client.classify(path, top_k=top_k, model=model)
            except ServeClientError as exc:
                if exc.status == 0:  # nothing answered: no use trying the next image
                    fail(exc.message)
                _add_error(table, path, exc)
                failed = True
                continue
            except OSError as exc:
                _add_error(table, path, exc)
                failed = True
                continue
            table.title = f"{result.model} v{result.version} at {url}"
            _add_predictions(table, path, result.predictions)
    return failed


class _Prediction(Protocol):  # the server's and the client's predictions alike
    @property
    def index(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...


def _add_predictions(table: Table, path: Path, predictions: Iterable[_Prediction]) -> None:
    for rank, p in enumerate(predictions, start=1):
        name = str(path) if rank == 1 else ""
        table.add_row(name, str(rank), p.label, str(p.index), f"{p.score:.4f}")


def _add_error(table: Table, path: Path, exc: Exception) -> None:
    if isinstance(exc, OSError):
        message = f"cannot read it ({exc.strerror})"
    elif hasattr(exc, "code") and hasattr(exc, "message"):  # ServeError, ServeClientError
        message = f"{exc.code}: {exc.message}"
    else:
        message = str(exc)
    table.add_row(str(path), "-", f"error: {message}", "", "")

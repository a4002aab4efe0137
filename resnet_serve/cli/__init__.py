"""The `resnet-serve` command. Each subcommand imports only what it needs, so `--help`
is instant and gateway-only installs never import torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from resnet_serve.shared.logs import configure_logging
from resnet_serve.shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from resnet_serve.worker.model.artifacts import Manifest

app = typer.Typer(
    help="ImageNet classification service: ResNet-18 over REST with dynamic batching.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

Host = Annotated[str | None, typer.Option(help="Bind address [env RESNET_SERVE_HOST]")]
Port = Annotated[int | None, typer.Option(help="Port [env RESNET_SERVE_PORT]")]
Model = Annotated[str | None, typer.Option(help="Model name (default resnet18)")]
Weights = Annotated[
    str | None, typer.Option(help="Weights file, or 'random' (plumbing/benchmarks only)")
]
EngineOpt = Annotated[
    str | None, typer.Option(help="auto | onnxruntime | torchscript (auto picks per machine)")
]
PrecisionOpt = Annotated[str | None, typer.Option(help="auto | fp32 | bf16 | fp16 (CUDA)")]
Repo = Annotated[Path | None, typer.Option(help="Model repository directory")]
MaxBatch = Annotated[int | None, typer.Option(help="Largest batch the engine runs")]
BatchWait = Annotated[
    float | None, typer.Option(help="How long a batch waits to fill after its first job (ms)")
]
RedisUrl = Annotated[
    str | None,
    typer.Option(help="redis:// or rediss:// URL [env RESNET_SERVE_REDIS_URL or REDIS_URL]"),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _settings(**flags: Any) -> Settings:
    try:
        settings = load_settings(**flags)
    except (ValidationError, ValueError) as exc:
        _fail(f"invalid settings:\n{exc}")
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _build_or_exit(settings: Settings) -> tuple[Path, Manifest]:
    """Resolve weights and build a missing artifact before the server starts, so a
    missing file is a clear message and a non-zero exit, not a half-started server."""
    # Only worker modules that do not import torch: a built ONNX artifact needs none.
    from resnet_serve.worker.engines.choice import choose_engine
    from resnet_serve.worker.model.artifacts import BuildError
    from resnet_serve.worker.model.loading import ensure_artifact

    try:
        return ensure_artifact(settings, choose_engine(settings.engine, settings.precision))
    except (BuildError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def serve(
    host: Host = None,
    port: Port = None,
    model: Model = None,
    weights: Weights = None,
    engine: EngineOpt = None,
    precision: PrecisionOpt = None,
    model_repository: Repo = None,
    max_batch: MaxBatch = None,
    max_batch_wait_ms: BatchWait = None,
) -> None:
    """Standalone mode: the gateway and an in-process worker, no external services."""
    settings = _settings(
        host=host,
        port=port,
        model=model,
        weights=weights,
        engine=engine,
        precision=precision,
        model_repository=model_repository,
        max_batch=max_batch,
        max_batch_wait_ms=max_batch_wait_ms,
    )
    if settings.engine != "fault":  # the test-only engine has no artifact
        _build_or_exit(settings)
    _run_gateway(settings, "inprocess")


def _run_gateway(settings: Settings, broker_kind: str) -> None:
    import uvicorn

    from resnet_serve.api.app import create_app
    from resnet_serve.shared.broker import Broker
    from resnet_serve.shared.metrics import Metrics

    metrics = Metrics()
    broker: Broker
    if broker_kind == "redis":
        from resnet_serve.api.broker.redis_broker import RedisBroker

        broker = RedisBroker(settings, metrics)
    else:
        from resnet_serve.worker.inprocess import InProcessBroker

        broker = InProcessBroker(settings, metrics)
    uvicorn.run(
        create_app(settings, broker, metrics),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # Draining: in-flight requests get up to their whole deadline to finish.
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
    )


@app.command()
def api(
    host: Host = None,
    port: Port = None,
    redis_url: RedisUrl = None,
    model: Annotated[str | None, typer.Option(help="Default model for requests")] = None,
) -> None:
    """Distributed mode, gateway: decode uploads and queue them on Redis for workers.
    Needs no torch; scale it horizontally, it keeps no state."""
    settings = _settings(host=host, port=port, redis_url=redis_url, model=model)
    _run_gateway(settings, "redis")


@app.command()
def worker(
    model: Model = None,
    weights: Weights = None,
    engine: EngineOpt = None,
    precision: PrecisionOpt = None,
    model_repository: Repo = None,
    max_batch: MaxBatch = None,
    max_batch_wait_ms: BatchWait = None,
    redis_url: RedisUrl = None,
    worker_id: Annotated[str | None, typer.Option(help="Consumer name (default host-pid)")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 0 if this worker's heartbeat is fresh, else 1")
    ] = False,
) -> None:
    """Distributed mode, worker: take jobs from Redis in batches, run the engine, reply."""
    settings = _settings(
        model=model,
        weights=weights,
        engine=engine,
        precision=precision,
        model_repository=model_repository,
        max_batch=max_batch,
        max_batch_wait_ms=max_batch_wait_ms,
        redis_url=redis_url,
        worker_id=worker_id,
    )
    if check:
        from resnet_serve.worker.liveness import workers_live

        raise typer.Exit(0 if workers_live(settings) else 1)
    if settings.engine != "fault":  # the test-only engine has no artifact
        _build_or_exit(settings)
    import asyncio

    from resnet_serve.worker.redis_worker import WorkerFailed, serve_worker

    try:
        asyncio.run(serve_worker(settings))
    except WorkerFailed as exc:
        _fail(str(exc), exc.exit_code)


@app.command("jobs-worker")
def jobs_worker(
    redis_url: RedisUrl = None,
    worker_id: Annotated[
        str | None, typer.Option(help="Name of its health-check key (default: host name)")
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 0 if this host's jobs-worker is healthy, else 1"),
    ] = False,
) -> None:
    """Distributed mode, bulk jobs (POST /v1/jobs): an arq worker that feeds their images
    through the inference streams. Needs no torch."""
    settings = _settings(redis_url=redis_url, worker_id=worker_id)
    import asyncio

    from resnet_serve.api.bulk.jobs_worker import healthy, serve_jobs_worker

    if check:
        raise typer.Exit(0 if asyncio.run(healthy(settings)) else 1)
    asyncio.run(serve_jobs_worker(settings))


@app.command()
def export(
    model: Model = None,
    weights: Weights = None,
    engine: EngineOpt = None,
    precision: PrecisionOpt = None,
    model_repository: Repo = None,
    max_batch: MaxBatch = None,
) -> None:
    """Build a model artifact (TorchScript or ONNX) into the model repository."""
    settings = _settings(
        model=model,
        weights=weights,
        engine=engine,
        precision=precision,
        model_repository=model_repository,
        max_batch=max_batch,
    )
    directory, manifest = _build_or_exit(settings)
    err.print(f"{manifest.name} version {manifest.version}: {directory}")
    for key, entry in manifest.artifacts.items():
        err.print(f"  {key}: {entry.file}")


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify")],
    top_k: Annotated[int, typer.Option(min=1, max=20, help="Labels per image")] = 5,
    model: Model = None,
    weights: Weights = None,
    engine: EngineOpt = None,
    model_repository: Repo = None,
    url: Annotated[
        str | None,
        typer.Option(help="Classify through a running server (http://host:port) instead"),
    ] = None,
) -> None:
    """Classify local image files and print a top-k table."""
    settings = _settings(
        model=model, weights=weights, engine=engine, model_repository=model_repository
    )
    if url:
        _predict_remote(url, images, top_k, model)
        return
    _build_or_exit(settings)
    import numpy as np

    from resnet_serve.shared.errors import ServeError
    from resnet_serve.shared.preprocess import PreprocessConfig, preprocess
    from resnet_serve.worker.model.loading import load_model
    from resnet_serve.worker.runner import top_k as best

    loaded = load_model(settings.model_copy(update={"max_batch": 1}))
    info = loaded.info
    config = PreprocessConfig(info.resize_size, info.input_size, settings.max_image_pixels)
    table = Table(title=f"{info.name} v{info.version} ({info.engine} {info.precision})")
    for column in ("image", "rank", "label", "index", "score"):
        table.add_column(column)
    failed = False
    for path in images:
        try:
            crop = preprocess(path.read_bytes(), config)
        except (ServeError, OSError) as exc:
            table.add_row(str(path), "-", f"error: {exc}", "", "")
            failed = True
            continue
        probabilities = loaded.engine.infer(np.expand_dims(crop, 0))[0]
        for rank, p in enumerate(best(probabilities, top_k, loaded.labels), start=1):
            table.add_row(
                str(path) if rank == 1 else "", str(rank), p.label, str(p.index), f"{p.score:.4f}"
            )
    loaded.engine.close()
    Console().print(table)
    if failed:
        raise typer.Exit(1)


def _predict_remote(url: str, images: list[Path], top_k: int, model: str | None) -> None:
    import logging

    from resnet_serve.client.client import Client
    from resnet_serve.client.models import ServeClientError

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    table = Table(title=f"{url}")
    for column in ("image", "rank", "label", "index", "score"):
        table.add_column(column)
    failed = False
    with Client(url) as client:
        for path in images:
            try:
                result = client.classify(path, top_k=top_k, model=model)
            except ServeClientError as exc:
                if exc.status == 0:  # nothing answered: no use trying the next image
                    _fail(exc.message)
                table.add_row(str(path), "-", f"error: {exc.code}: {exc.message}", "", "")
                failed = True
                continue
            except OSError as exc:
                table.add_row(str(path), "-", f"error: {exc}", "", "")
                failed = True
                continue
            table.title = f"{result.model} v{result.version} at {url}"
            for rank, p in enumerate(result.predictions, start=1):
                name = str(path) if rank == 1 else ""
                table.add_row(name, str(rank), p.label, str(p.index), f"{p.score:.4f}")
    Console().print(table)
    if failed:
        raise typer.Exit(1)


@app.command()
def models(model_repository: Repo = None) -> None:
    """List the models this service knows and the artifacts built so far."""
    settings = _settings(model_repository=model_repository)
    from resnet_serve.worker.model.artifacts import ModelRepository
    from resnet_serve.worker.model.catalog import BUILTIN

    console = Console()
    console.print(f"built-in models: {', '.join(BUILTIN)}")
    console.print("plus any torchvision classification model by name (e.g. mobilenet_v3_small)")
    repo = ModelRepository(settings.models_dir)
    table = Table(title=f"artifacts in {settings.models_dir}")
    for column in ("model", "version", "weights", "artifact", "file", "max batch", "built"):
        table.add_column(column)
    for name in repo.models():
        for directory, manifest in repo.versions(name):
            weights = manifest.weights.file or manifest.weights.source
            for key, entry in manifest.artifacts.items():
                table.add_row(
                    name,
                    manifest.version,
                    weights,
                    key,
                    str(directory / entry.file),
                    str(entry.max_batch),
                    entry.created_at[:19],
                )
    console.print(table)


def main() -> None:
    app(prog_name="resnet-serve")


if __name__ == "__main__":
    main()

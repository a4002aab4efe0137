"""The long-running commands: `serve` (standalone), `api`, `worker` and `jobs-worker`
(distributed). Each imports only its side, so a gateway install never needs torch."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from resnet_serve.cli.common import (
    BatchWait,
    EngineOpt,
    GrpcPort,
    Host,
    MaxBatch,
    Model,
    Port,
    PrecisionOpt,
    RedisUrl,
    Repo,
    Weights,
    build_or_exit,
    fail,
    settings_from,
)
from resnet_serve.shared.settings import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from resnet_serve.shared.broker import Broker
    from resnet_serve.shared.metrics import Metrics

BrokerFactory = Callable[["Metrics"], "Broker"]


def serve(
    host: Host = None,
    port: Port = None,
    grpc_port: GrpcPort = None,
    model: Model = None,
    weights: Weights = None,
    engine: EngineOpt = None,
    precision: PrecisionOpt = None,
    model_repository: Repo = None,
    max_batch: MaxBatch = None,
    max_batch_wait_ms: BatchWait = None,
) -> None:
    """Standalone mode: the gateway and an in-process worker, no external services."""
    settings = settings_from(
        host=host,
        port=port,
        grpc_port=grpc_port,
        model=model,
        weights=weights,
        engine=engine,
        precision=precision,
        model_repository=model_repository,
        max_batch=max_batch,
        max_batch_wait_ms=max_batch_wait_ms,
    )
    _check_grpc_port(settings)  # before minutes of building, not after
    from resnet_serve.worker.engines.registry import serves_without_artifact
    from resnet_serve.worker.inprocess import InProcessBroker

    if not serves_without_artifact(settings.engine):
        build_or_exit(settings)

    _run_gateway(settings, lambda metrics: InProcessBroker(settings, metrics), distributed=False)


def api(
    host: Host = None,
    port: Port = None,
    grpc_port: GrpcPort = None,
    redis_url: RedisUrl = None,
    model: Annotated[str | None, typer.Option(help="Default model for requests")] = None,
) -> None:
    """Distributed mode, gateway: decode uploads and queue them on Redis for workers.
    Needs no torch; scale it horizontally, it keeps no state."""
    settings = settings_from(
        host=host, port=port, grpc_port=grpc_port, redis_url=redis_url, model=model
    )
    _check_grpc_port(settings)
    from resnet_serve.api.broker.redis_broker import RedisBroker

    _run_gateway(settings, lambda metrics: RedisBroker(settings, metrics))


def _run_gateway(
    settings: Settings, make_broker: BrokerFactory, *, distributed: bool = True
) -> None:
    import uvicorn

    from resnet_serve.api.app import create_app
    from resnet_serve.api.limits import malloc
    from resnet_serve.api.limits.http import server_options
    from resnet_serve.shared.metrics import GATEWAY, WORKER, Metrics

    malloc.tune_allocator()  # so RSS comes back after a burst of large decodes

    # Standalone, the worker lives in this process; a distributed gateway infers nothing.
    roles = (GATEWAY,) if distributed else (GATEWAY, WORKER)
    metrics = Metrics(roles=roles, distributed=distributed)
    uvicorn.run(
        create_app(settings, make_broker(metrics), metrics),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # Draining: in-flight requests get up to their whole deadline to finish.
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
        **server_options(settings),
    )


def _check_grpc_port(settings: Settings) -> None:
    """The gRPC server binds without SO_REUSEPORT, so a taken port fails its start;
    say so in a sentence first, rather than in grpcio's traceback."""
    import socket

    host, port = settings.host, settings.grpc_port
    if not port:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(
                f"the gRPC port {host}:{port} is taken ({exc.strerror}).\n"
                "Choose another with --grpc-port (RESNET_SERVE_GRPC_PORT); 0: no gRPC server"
            )


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
        bool,
        typer.Option(
            "--check",
            help="Exit 0 if the workers on this host (of --model, when given) made "
            "progress lately, else 1",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port (default 8002; 0: none)")
    ] = None,
) -> None:
    """Distributed mode, worker: take jobs from Redis in batches, run the engine, reply."""
    settings = settings_from(
        model=model,
        weights=weights,
        engine=engine,
        precision=precision,
        model_repository=model_repository,
        max_batch=max_batch,
        max_batch_wait_ms=max_batch_wait_ms,
        redis_url=redis_url,
        worker_id=worker_id,
        worker_metrics_port=metrics_port,
    )
    if check:
        from resnet_serve.worker.liveness import live_summary, why_not_live, workers_live

        # Without --model (flag or environment), any worker on this host will do.
        any_model = model is None and f"{ENV_PREFIX}MODEL" not in os.environ
        if workers_live(settings, any_model):
            typer.echo(live_summary(settings, any_model))
            raise typer.Exit(0)
        fail(why_not_live(settings, any_model), code=1)
    from resnet_serve.worker.engines.registry import serves_without_artifact
    from resnet_serve.worker.failures import WorkerFailed
    from resnet_serve.worker.worker_process import serve_worker

    if not serves_without_artifact(settings.engine):
        build_or_exit(settings)

    try:
        asyncio.run(serve_worker(settings))
    except WorkerFailed as exc:
        fail(str(exc), exc.exit_code)


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
    settings = settings_from(redis_url=redis_url, worker_id=worker_id)
    from resnet_serve.api.bulk.jobs_worker import healthy, serve_jobs_worker
    from resnet_serve.api.bulk.jobs_worker import worker_id as health_id

    if check:
        if asyncio.run(healthy(settings)):
            raise typer.Exit(0)
        fail(
            f"no fresh jobs-worker health-check key for {health_id(settings)!r} in Redis: "
            "none runs on this host, it is stuck, or Redis is unreachable "
            "(--worker-id names another host's)",
            code=1,
        )
    from resnet_serve.api.limits import malloc

    malloc.tune_allocator()
    asyncio.run(serve_jobs_worker(settings))

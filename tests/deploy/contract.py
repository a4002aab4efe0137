"""What the deploy files may rely on: the distributed-mode contract (metric names, CLI
commands, settings), read from the code where the code can say it."""

from __future__ import annotations

from typing import Any

import typer

from resnet_serve.cli import app
from resnet_serve.shared.settings import ENV_PREFIX, Settings

# The metric families the service exports (docs/deploy.md lists their meaning).
GATEWAY_METRICS = {
    "resnet_serve_requests_total": "counter",
    "resnet_serve_request_duration_seconds": "histogram",
    "resnet_serve_in_flight_requests": "gauge",
    "resnet_serve_decode_duration_seconds": "histogram",
    "resnet_serve_cache_lookups_total": "counter",
    "resnet_serve_errors_total": "counter",
}
QUEUE_METRICS = {  # exported by every gateway from Redis: same value everywhere
    "resnet_serve_queue_depth": "gauge",
    "resnet_serve_queue_in_flight": "gauge",
    "resnet_serve_queue_oldest_age_seconds": "gauge",
    "resnet_serve_dead_letters": "gauge",
    "resnet_serve_workers": "gauge",
    "resnet_serve_workers_needed": "gauge",
    "resnet_serve_bulk_queue_depth": "gauge",  # arq's queue, read at each scrape
}
WORKER_METRICS = {
    "resnet_serve_batch_size": "histogram",
    "resnet_serve_inference_duration_seconds": "histogram",
    "resnet_serve_queue_wait_seconds": "histogram",
    "resnet_serve_expired_jobs_total": "counter",
    "resnet_serve_cancelled_jobs_total": "counter",
    "resnet_serve_reclaimed_jobs_total": "counter",
    "resnet_serve_dead_lettered_total": "counter",
    "resnet_serve_lost_leases_total": "counter",
    "resnet_serve_handed_back_jobs_total": "counter",
    "resnet_serve_max_batch": "gauge",
}
METRICS = GATEWAY_METRICS | QUEUE_METRICS | WORKER_METRICS
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names() -> set[str]:
    """Every series name Prometheus can hold for METRICS (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for name, kind in METRICS.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(name)
    return names


def cli_commands() -> dict[str, Any]:
    """The subcommands `resnet-serve` really has, as its click group sees them."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def command_problems(argv: list[str]) -> list[str]:
    """Why `argv` is not a valid `resnet-serve` command line (empty when it is)."""
    if not argv or argv[0] != "resnet-serve":
        return [f"{argv}: not a resnet-serve command"]
    commands = cli_commands()
    if len(argv) < 2 or argv[1] not in commands:
        return [f"{argv}: subcommand not registered (have {sorted(commands)})"]
    options = {opt for param in commands[argv[1]].params for opt in param.opts}
    return [
        f"{argv}: {token} is no option of `resnet-serve {argv[1]}`"
        for token in argv[2:]
        if token.startswith("-") and token.split("=")[0] not in options
    ]


def setting_env_names() -> set[str]:
    """Environment names the service reads: RESNET_SERVE_<field> and plain REDIS_URL."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {"REDIS_URL"}


def setting_default(name: str) -> object:
    """The default of a setting, by field name."""
    return Settings.model_fields[name].get_default(call_default_factory=True)

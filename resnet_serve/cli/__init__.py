"""The `resnet-serve` command: the composition root, above the gateway (`api`) and the
worker. Each command imports its side only when it runs, so `--help` is instant and a
gateway install never imports torch."""

from __future__ import annotations

from typing import Annotated

import typer

from resnet_serve import __version__
from resnet_serve.cli import models, predict, serving
from resnet_serve.cli.common import extras_or_exit

app = typer.Typer(
    help="ImageNet classification service: ResNet-18 over REST with dynamic batching.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Click's plain help: flags without a `<bool>` type column, text kept as written.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"resnet-serve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """ImageNet classification service: ResNet-18 over REST with dynamic batching."""


# Short lines for the command list: Click cuts longer ones with "..." at 80 columns.
app.command(short_help="Standalone: the gateway and an in-process worker.")(serving.serve)
app.command(short_help="Distributed gateway (no torch): queues uploads on Redis.")(serving.api)
app.command(short_help="Distributed worker: batches from Redis through the engine.")(serving.worker)
app.command("jobs-worker", short_help="Distributed bulk jobs (POST /v1/jobs), no torch.")(
    serving.jobs_worker
)
app.command(short_help="Build a model artifact (ONNX or TorchScript).")(models.export)
app.command(short_help="Classify image files and print a top-k table.")(predict.predict)
app.command(short_help="List known models and built artifacts.")(models.models)


def main() -> None:
    with extras_or_exit():
        app(prog_name="resnet-serve")

"""The `resnet-serve` command: the composition root, above the gateway (`api`) and the
worker. Each command imports its side only when it runs, so `--help` is instant and a
gateway install never imports torch."""

from __future__ import annotations

import typer

from resnet_serve.cli import models, predict, serving

app = typer.Typer(
    help="ImageNet classification service: ResNet-18 over REST with dynamic batching.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(serving.serve)
app.command()(serving.api)
app.command()(serving.worker)
app.command("jobs-worker")(serving.jobs_worker)
app.command()(models.export)
app.command()(predict.predict)
app.command()(models.models)


def main() -> None:
    app(prog_name="resnet-serve")

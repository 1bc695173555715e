"""The ``ovbatch`` command."""

from __future__ import annotations

import click

from ovbatch import __version__

from . import batch
from .demo import demo
from .helpers import clean_errors, settings_of
from .keys import keys
from .models import models
from .workers import worker, workers


@click.group()
@click.version_option(__version__, prog_name="ovbatch")
def cli() -> None:
    """Batch processor for OpenVINO inference with an encrypted model registry."""


@cli.command()
@click.pass_context
@clean_errors
def config(ctx: click.Context) -> None:
    """Print the effective settings (secrets masked)."""
    for key, value in settings_of(ctx).masked().items():
        click.echo(f"{key:16} {value}")


cli.add_command(demo)
cli.add_command(keys)
cli.add_command(models)
cli.add_command(worker)
cli.add_command(workers)
batch.add_to(cli)


def main() -> None:
    cli()
